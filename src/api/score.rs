//! `ScoreService`: scores computed from committed state.

use tonic::{Request, Response, Status};

use super::{convert, now_millis, page_size, Shared};
use crate::domain::validate::{check_id, check_scope, is_valid_name, timestamp_millis};
use crate::domain::Millis;
use crate::error::Error;
use crate::proto::{
    score_service_server::ScoreService, CustomerScore, GetCustomerScoreRequest,
    GetScopeScoreRequest, ListAtRiskCustomersRequest, ListAtRiskCustomersResponse,
    ListScopesRequest, ListScopesResponse, ScopeScore, ScopeSummary,
};
use crate::scoring::Tier;

pub struct ScoreApi {
    shared: Shared,
}

impl ScoreApi {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

fn as_of(ts: Option<&pbjson_types::Timestamp>) -> Result<Millis, Error> {
    match ts {
        None => Ok(now_millis()),
        Some(ts) => timestamp_millis(ts).map_err(|reason| Error::invalid("as_of_time", reason)),
    }
}

/// Page tokens are opaque to clients: hex of what the next page resumes
/// from.
fn encode_token(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Result<String, Error> {
    let bad = || Error::invalid("page_token", "is not a token returned by this method");
    if token.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, Error>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

fn tier_filter(value: i32) -> Result<Option<Tier>, Error> {
    use crate::proto::Tier as P;
    match P::try_from(value) {
        Ok(P::Unspecified) => Ok(None),
        Ok(P::Prospect) => Ok(Some(Tier::Prospect)),
        Ok(P::Standard) => Ok(Some(Tier::Standard)),
        Ok(P::Vip) => Ok(Some(Tier::Vip)),
        Err(_) => Err(Error::invalid("tier", format!("unknown tier {value}"))),
    }
}

#[tonic::async_trait]
impl ScoreService for ScoreApi {
    async fn get_customer_score(
        &self,
        request: Request<GetCustomerScoreRequest>,
    ) -> Result<Response<CustomerScore>, Status> {
        let request = request.into_inner();
        check_id(&request.customer_id).map_err(|reason| Error::invalid("customer_id", reason))?;
        let as_of = as_of(request.as_of_time.as_ref())?;
        let store = &self.shared.store;
        let state = store
            .customer(&request.customer_id)
            .map_err(Error::from)?
            .ok_or_else(|| {
                Error::NotFound(format!("customer `{}` has no events", request.customer_id))
            })?;
        let threshold = store
            .histogram()
            .map_err(Error::from)?
            .vip_threshold(&self.shared.config.scoring);
        let report = state.report(as_of, &self.shared.config.scoring, threshold);
        Ok(Response::new(convert::customer(
            &request.customer_id,
            as_of,
            &report,
        )))
    }

    async fn get_scope_score(
        &self,
        request: Request<GetScopeScoreRequest>,
    ) -> Result<Response<ScopeScore>, Status> {
        let request = request.into_inner();
        check_scope(&request.scope).map_err(|reason| Error::invalid("scope", reason))?;
        let as_of = as_of(request.as_of_time.as_ref())?;
        let state = self
            .shared
            .store
            .scope(&request.scope)
            .map_err(Error::from)?
            .ok_or_else(|| Error::NotFound(format!("scope `{}` has no events", request.scope)))?;
        let dimensions: Vec<_> = self
            .shared
            .engine
            .dimensions()
            .snapshot()
            .values()
            .cloned()
            .collect();
        let report = state.report(as_of, &dimensions, &self.shared.config.scoring);
        Ok(Response::new(convert::scope(
            &request.scope,
            as_of,
            &report,
        )))
    }

    async fn list_scopes(
        &self,
        request: Request<ListScopesRequest>,
    ) -> Result<Response<ListScopesResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let prefix = if request.attribute_key.is_empty() {
            String::new()
        } else if is_valid_name(&request.attribute_key) {
            format!("{}=", request.attribute_key)
        } else {
            return Err(Error::invalid("attribute_key", "must match [a-z0-9_]{1,32}").into());
        };
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(decode_token(&request.page_token)?)
        };
        // One extra tells whether another page exists.
        let mut scopes = self
            .shared
            .store
            .scopes(&prefix, after.as_deref(), limit + 1)
            .map_err(Error::from)?;
        let next_page_token = if scopes.len() > limit {
            scopes.truncate(limit);
            scopes
                .last()
                .map(|(name, _)| encode_token(name))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListScopesResponse {
            scopes: scopes
                .into_iter()
                .map(|(scope, state)| ScopeSummary {
                    scope,
                    customer_count: state.customer_count(),
                    event_count: state.event_count(),
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn list_at_risk_customers(
        &self,
        request: Request<ListAtRiskCustomersRequest>,
    ) -> Result<Response<ListAtRiskCustomersResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let tier = tier_filter(request.tier)?;
        let scope = (!request.scope.is_empty()).then_some(request.scope);
        if let Some(scope) = &scope {
            check_scope(scope).map_err(|reason| Error::invalid("scope", reason))?;
        }
        // The token pins the evaluation instant so pages stay consistent.
        let (offset, as_of) = if request.page_token.is_empty() {
            (0usize, as_of(request.as_of_time.as_ref())?)
        } else {
            let token = decode_token(&request.page_token)?;
            token
                .split_once(':')
                .and_then(|(o, t)| Some((o.parse().ok()?, t.parse().ok()?)))
                .ok_or_else(|| {
                    Error::invalid("page_token", "is not a token returned by this method")
                })?
        };
        let store = self.shared.store.clone();
        let params = self.shared.config.scoring.clone();
        // A full scan: at-risk status moves with the clock (activity decays),
        // so no index kept at write time could answer it.
        let scan = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let threshold = store.histogram()?.vip_threshold(&params);
            let mut at_risk = Vec::new();
            for entry in store.customers(scope.as_deref()) {
                let (id, state) = entry?;
                let report = state.report(as_of, &params, threshold);
                if report.at_risk && tier.is_none_or(|t| t == report.tier) {
                    at_risk.push((id, report));
                }
            }
            at_risk.sort_by(|(a_id, a), (b_id, b)| {
                b.tier
                    .cmp(&a.tier)
                    .then(b.value.total_cmp(&a.value))
                    .then_with(|| a_id.cmp(b_id))
            });
            Ok(at_risk)
        });
        let at_risk = scan
            .await
            .map_err(|e| Status::internal(format!("at-risk scan failed: {e}")))??;
        let end = (offset + limit).min(at_risk.len());
        let next_page_token = if end < at_risk.len() {
            encode_token(&format!("{end}:{as_of}"))
        } else {
            String::new()
        };
        let customers = at_risk
            .get(offset.min(end)..end)
            .unwrap_or_default()
            .iter()
            .map(|(id, report)| convert::customer(id, as_of, report))
            .collect();
        Ok(Response::new(ListAtRiskCustomersResponse {
            customers,
            next_page_token,
        }))
    }
}
