//! Bearer-token authentication with scopes, as a tower layer in front of
//! every gRPC service.
//!
//! Each RPC needs one scope (`ingest`, `read` or `admin`); health needs none
//! (Kubernetes probes cannot send a token). Tokens are compared as SHA-256
//! digests in constant time, so neither their content nor their length
//! leaks through timing, and they are never logged (`Debug` redacts them).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// IngestService.
    Ingest,
    /// ScoreService, AlertService reads, ListDimensions, reflection.
    Read,
    /// PutDimension, AcknowledgeAlert.
    Admin,
}

/// One client's credentials (`[[tokens]]` in the tokens file).
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Who this is, for logs.
    pub name: String,
    pub secret: String,
    pub scopes: BTreeSet<Scope>,
}

impl std::fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSpec")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// `[auth]`: tokens inline and/or from a file. No token at all: auth off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A TOML file of `[[tokens]]` tables (name, secret, scopes).
    pub tokens_file: Option<PathBuf>,
    /// Tokens given directly (e.g. from `GAPWATCH__AUTH__TOKENS`).
    pub tokens: Vec<TokenSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenSpec>,
}

struct Known {
    name: String,
    digest: [u8; 32],
    scopes: BTreeSet<Scope>,
}

/// The loaded tokens; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<Vec<Known>>,
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

impl Authenticator {
    /// `None` when no token is configured (authentication off).
    pub fn load(config: &AuthConfig) -> anyhow::Result<Option<Self>> {
        let mut specs = config.tokens.clone();
        if let Some(path) = &config.tokens_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("auth.tokens_file {}: {e}", path.display()))?;
            let file: TokensFile = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("auth.tokens_file {}: {e}", path.display()))?;
            specs.extend(file.tokens);
        }
        if specs.is_empty() {
            return Ok(None);
        }
        let mut tokens = Vec::with_capacity(specs.len());
        for spec in specs {
            if spec.secret.len() < 16 {
                anyhow::bail!(
                    "auth token {:?}: the secret must be at least 16 bytes",
                    spec.name
                );
            }
            if spec.scopes.is_empty() {
                anyhow::bail!("auth token {:?}: give at least one scope", spec.name);
            }
            tokens.push(Known {
                name: spec.name,
                digest: digest(spec.secret.as_bytes()),
                scopes: spec.scopes,
            });
        }
        Ok(Some(Self {
            tokens: Arc::new(tokens),
        }))
    }

    /// Checks the `authorization` header against the scope `path` needs.
    pub fn check(&self, path: &str, authorization: Option<&[u8]>) -> Result<(), Status> {
        let Some(needed) = scope_of(path) else {
            return Ok(());
        };
        let presented = authorization
            .and_then(|h| {
                h.strip_prefix(b"Bearer ")
                    .or_else(|| h.strip_prefix(b"bearer "))
            })
            .ok_or_else(|| {
                Status::unauthenticated("missing bearer token (header `authorization: Bearer …`)")
            })?;
        let presented = digest(presented);
        // Every token is compared, so the time does not depend on which
        // one matches.
        let mut found: Option<&Known> = None;
        for known in self.tokens.iter() {
            if bool::from(known.digest.ct_eq(&presented)) {
                found = Some(known);
            }
        }
        let known = found.ok_or_else(|| Status::unauthenticated("unknown bearer token"))?;
        if known.scopes.contains(&needed) {
            Ok(())
        } else {
            tracing::debug!(client = %known.name, path, "token lacks the scope");
            Err(Status::permission_denied(format!(
                "token {:?} lacks the `{}` scope this method needs",
                known.name,
                scope_name(needed)
            )))
        }
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Ingest => "ingest",
        Scope::Read => "read",
        Scope::Admin => "admin",
    }
}

/// The scope a gRPC path needs; `None` for health (always open).
pub fn scope_of(path: &str) -> Option<Scope> {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let method = path.rsplit('/').next().unwrap_or("");
    match service {
        "grpc.health.v1.Health" => None,
        "gapwatch.v1.IngestService" => Some(Scope::Ingest),
        "gapwatch.v1.ConfigService" if method == "PutDimension" => Some(Scope::Admin),
        "gapwatch.v1.AlertService" if method == "AcknowledgeAlert" => Some(Scope::Admin),
        // Scores, alert reads, dimension listing, reflection; and anything
        // unknown needs at least `read` before it gets UNIMPLEMENTED.
        _ => Some(Scope::Read),
    }
}

/// Tower layer applying an [`Authenticator`] (or nothing when auth is off).
#[derive(Clone)]
pub struct AuthLayer {
    auth: Option<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Option<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Authenticator>,
}

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        S::Future,
        std::future::Ready<Result<http::Response<R>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(auth) = &self.auth {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes);
            if let Err(status) = auth.check(request.uri().path(), header) {
                return futures_util::future::Either::Right(std::future::ready(Ok(
                    status.into_http()
                )));
            }
        }
        futures_util::future::Either::Left(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::load(&AuthConfig {
            tokens_file: None,
            tokens: vec![
                TokenSpec {
                    name: "shop".into(),
                    secret: "shop-secret-0123456789".into(),
                    scopes: [Scope::Ingest].into(),
                },
                TokenSpec {
                    name: "ops".into(),
                    secret: "ops-secret-0123456789".into(),
                    scopes: [Scope::Read, Scope::Admin].into(),
                },
            ],
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    fn scopes_by_method() {
        assert_eq!(scope_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            scope_of("/gapwatch.v1.IngestService/StreamEvents"),
            Some(Scope::Ingest)
        );
        assert_eq!(
            scope_of("/gapwatch.v1.ScoreService/GetScopeScore"),
            Some(Scope::Read)
        );
        assert_eq!(
            scope_of("/gapwatch.v1.ConfigService/PutDimension"),
            Some(Scope::Admin)
        );
        assert_eq!(
            scope_of("/gapwatch.v1.ConfigService/ListDimensions"),
            Some(Scope::Read)
        );
        assert_eq!(
            scope_of("/gapwatch.v1.AlertService/AcknowledgeAlert"),
            Some(Scope::Admin)
        );
        assert_eq!(
            scope_of("/gapwatch.v1.AlertService/Subscribe"),
            Some(Scope::Read)
        );
    }

    #[test]
    fn missing_wrong_and_insufficient_tokens() {
        let a = auth();
        let ingest = "/gapwatch.v1.IngestService/RecordSurvey";
        assert_eq!(
            a.check(ingest, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            a.check(ingest, Some(b"Bearer nope")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            a.check(ingest, Some(b"Basic shop-secret-0123456789"))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert!(a
            .check(ingest, Some(b"Bearer shop-secret-0123456789"))
            .is_ok());
        let denied = a
            .check(ingest, Some(b"Bearer ops-secret-0123456789"))
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("ingest"), "{}", denied.message());
        assert!(a.check("/grpc.health.v1.Health/Check", None).is_ok());
    }

    #[test]
    fn secrets_are_never_printed() {
        let spec = TokenSpec {
            name: "shop".into(),
            secret: "shop-secret-0123456789".into(),
            scopes: [Scope::Ingest].into(),
        };
        assert!(!format!("{spec:?}").contains("shop-secret"));
    }

    #[test]
    fn rejects_weak_or_scopeless_tokens() {
        let weak = AuthConfig {
            tokens_file: None,
            tokens: vec![TokenSpec {
                name: "x".into(),
                secret: "short".into(),
                scopes: [Scope::Read].into(),
            }],
        };
        assert!(Authenticator::load(&weak).is_err());
        assert!(Authenticator::load(&AuthConfig::default())
            .unwrap()
            .is_none());
    }
}
