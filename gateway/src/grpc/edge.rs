//! What every gRPC call goes through: the caller from its `authorization`
//! metadata (a bad token is UNAUTHENTICATED before anything runs), its rate
//! budget (RESOURCE_EXHAUSTED past it), then the GraphQL schema's own
//! operation, whose first error becomes the call's status.

use std::net::{IpAddr, Ipv4Addr};

use async_graphql::Variables;
use futures::stream::{BoxStream, StreamExt};
use serde::de::DeserializeOwned;
use tonic::{Request, Status};

use super::status;
use crate::auth::{Authenticator, Caller};
use crate::graphql::ConveyorSchema;
use crate::graphql::errors::{add_missing_codes, rate_limited};
use crate::rate_limit::{RateLimiter, caller_key};

#[derive(Clone)]
pub struct Edge {
    pub schema: ConveyorSchema,
    pub auth: Authenticator,
    pub limiter: RateLimiter,
}

impl Edge {
    /// The caller the request's `authorization` metadata names, once it is
    /// within its rate.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let authorization = request.metadata().get("authorization").map(|value| value.to_str());
        let authorization = match authorization {
            None => None,
            Some(Ok(value)) => Some(value),
            Some(Err(_)) => {
                return Err(status::coded(crate::auth::UNAUTHENTICATED, "authorization must be ASCII", None));
            }
        };
        let caller = self.auth.caller(authorization).map_err(|error| status::from_error(&error))?;
        let ip = request.remote_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |address| address.ip());
        if let Err(wait) = self.limiter.check(&caller_key(&caller, ip)) {
            let error = rate_limited(wait);
            return Err(status::from_graphql(&error.message, error.extensions.as_ref()));
        }
        Ok(caller)
    }

    /// Runs a query or mutation as `caller`; its data, or its first error.
    pub async fn run<T: DeserializeOwned>(
        &self,
        caller: Caller,
        document: &str,
        variables: serde_json::Value,
    ) -> Result<T, Status> {
        let request = async_graphql::Request::new(document).variables(Variables::from_json(variables)).data(caller);
        let response = self.schema.execute(request).await;
        data(response)
    }

    /// Runs a subscription as `caller`: each event's data, or the first error (which ends it).
    pub fn subscribe<T: DeserializeOwned + Send + 'static>(
        &self,
        caller: Caller,
        document: &str,
        variables: serde_json::Value,
    ) -> BoxStream<'static, Result<T, Status>> {
        let request = async_graphql::Request::new(document).variables(Variables::from_json(variables)).data(caller);
        self.schema
            .execute_stream(request)
            .map(data)
            .scan(false, |failed, item| {
                // Nothing after an error: the call ends with its status.
                let next = (!*failed).then(|| {
                    *failed = item.is_err();
                    item
                });
                futures::future::ready(next)
            })
            .boxed()
    }
}

fn data<T: DeserializeOwned>(mut response: async_graphql::Response) -> Result<T, Status> {
    add_missing_codes(&mut response);
    if let Some(error) = response.errors.first() {
        return Err(status::from_graphql(&error.message, error.extensions.as_ref()));
    }
    let json = response.data.into_json().map_err(status::internal)?;
    serde_json::from_value(json).map_err(status::internal)
}
