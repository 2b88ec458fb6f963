//! `ConfigService`: the service dimensions.

use tonic::{Request, Response, Status};

use super::Shared;
use crate::domain::validate::{is_valid_name, FieldViolation};
use crate::domain::DimensionSpec;
use crate::error::Error;
use crate::proto::{
    config_service_server::ConfigService, Dimension, ListDimensionsRequest, ListDimensionsResponse,
    PutDimensionRequest,
};

pub struct ConfigApi {
    shared: Shared,
}

impl ConfigApi {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

fn to_proto(d: &DimensionSpec) -> Dimension {
    Dimension {
        name: d.name.clone(),
        display_name: d.display_name.clone(),
        predicted_expectation: d.predicted_expectation,
        standard_level: d.standard_level,
    }
}

fn validate(d: Dimension) -> Result<DimensionSpec, Error> {
    let mut violations = Vec::new();
    let mut fail = |field: &str, reason: String| {
        violations.push(FieldViolation {
            field: format!("dimension.{field}"),
            reason,
        })
    };
    if !is_valid_name(&d.name) {
        fail(
            "name",
            format!("must match [a-z0-9_]{{1,32}}, got `{}`", d.name),
        );
    }
    if d.display_name.len() > 64 || d.display_name.chars().any(char::is_control) {
        fail(
            "display_name",
            "must be at most 64 bytes without control characters".into(),
        );
    }
    for (field, value) in [
        ("predicted_expectation", d.predicted_expectation),
        ("standard_level", d.standard_level),
    ] {
        if let Some(v) = value {
            if !(1.0..=7.0).contains(&v) {
                fail(field, format!("must be between 1 and 7, got {v}"));
            }
        }
    }
    if !violations.is_empty() {
        return Err(Error::InvalidArgument(violations));
    }
    Ok(DimensionSpec {
        display_name: if d.display_name.is_empty() {
            d.name.clone()
        } else {
            d.display_name
        },
        name: d.name,
        predicted_expectation: d.predicted_expectation,
        standard_level: d.standard_level,
    })
}

#[tonic::async_trait]
impl ConfigService for ConfigApi {
    async fn put_dimension(
        &self,
        request: Request<PutDimensionRequest>,
    ) -> Result<Response<Dimension>, Status> {
        let Some(dimension) = request.into_inner().dimension else {
            return Err(Error::invalid("dimension", "is required").into());
        };
        let spec = validate(dimension)?;
        self.shared.engine.put_dimension(spec.clone()).await?;
        Ok(Response::new(to_proto(&spec)))
    }

    async fn list_dimensions(
        &self,
        _request: Request<ListDimensionsRequest>,
    ) -> Result<Response<ListDimensionsResponse>, Status> {
        let dimensions = self.shared.engine.dimensions().snapshot();
        Ok(Response::new(ListDimensionsResponse {
            dimensions: dimensions.values().map(to_proto).collect(),
        }))
    }
}
