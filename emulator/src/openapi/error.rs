//! The cloud's error answer: a non-2xx status whose JSON body is
//! `{"RequestId", "HostId", "Code", "Message", "Recommend"}` (reference §1.3).
//!
//! Clients branch on `Code` only (the old Go SDK's `ServerError.ErrorCode()`, the tea SDKs'
//! `ClientException.code`), so the code and its HTTP status come from the one place that decides
//! them: a handler's `google.rpc.ErrorInfo` (reason = code, metadata `http_status`), i.e.
//! [`ModelError::code`] and [`ModelError::http_status`]. Errors of the endpoint itself (missing
//! `Action`, a bad signature, …) are built here with the gateway's codes and statuses. This module
//! decides no cloud behaviour of its own beyond those gateway codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use enifab_model::ModelError;
use tonic::Status;
use tonic_types::StatusExt;

use crate::codec::ParamError;

/// One failed call, as the cloud reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// The request ID a handler already gave the call (it is also in the server's logs).
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
        ApiError { status, code: code.to_string(), message: message.into(), request_id: None }
    }

    /// `MissingParameter` (400), the gateway's answer to an absent mandatory parameter.
    pub fn missing(param: &str) -> ApiError {
        ApiError::new(
            400,
            "MissingParameter",
            format!("The input parameter \"{param}\" that is mandatory for processing this request is not supplied."),
        )
    }

    /// `InvalidParameter` (400).
    pub fn invalid(param: &str, detail: impl std::fmt::Display) -> ApiError {
        ApiError::new(400, "InvalidParameter", format!("The specified parameter \"{param}\" is not valid. {detail}"))
    }

    pub fn from_model(e: &ModelError) -> ApiError {
        ApiError::new(e.http_status(), e.code(), e.to_string())
    }

    /// A handler's failure: the cloud code, status and request ID ride in its ErrorInfo. A status
    /// without one is a fault of the emulator, reported as the cloud reports its own.
    pub fn from_status(status: &Status) -> ApiError {
        let Some(info) = status.get_details_error_info() else {
            tracing::warn!(%status, "a handler failed without a cloud error code");
            return ApiError::from_model(&ModelError::InternalError);
        };
        let message = crate::grpc::status::cloud_message(status, &info.reason);
        let http = info.metadata.get("http_status").and_then(|s| s.parse().ok()).unwrap_or(400);
        ApiError {
            status: http,
            code: info.reason.clone(),
            message: message.to_string(),
            request_id: info.metadata.get("request_id").cloned(),
        }
    }

    /// The response: `host_id` is the product's endpoint, `product` its code in `Recommend`.
    pub fn into_response(self, request_id: &str, host_id: &str, product: &str) -> Response {
        let rid = self.request_id.clone().unwrap_or_else(|| request_id.to_string());
        let body = self.body(&rid, host_id, product);
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        json_response(status, &rid, &body)
    }

    /// The JSON body of the answer (see [`ApiError::into_response`]).
    pub fn body(&self, request_id: &str, host_id: &str, product: &str) -> serde_json::Value {
        let rid = self.request_id.as_deref().unwrap_or(request_id);
        serde_json::json!({
            "RequestId": rid,
            "HostId": host_id,
            "Code": self.code,
            "Message": self.message,
            "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}&product={product}&requestId={rid}", self.code),
        })
    }

    /// The whole HTTP/1.1 answer as bytes, for the one place that answers beneath the router
    /// (the listener, for requests hyper could not parse). The connection closes after it.
    pub fn to_http1_bytes(&self, request_id: &str, host_id: &str, product: &str) -> Vec<u8> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = self.body(request_id, host_id, product).to_string();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json;charset=utf-8\r\nx-acs-request-id: {request_id}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes()
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> ApiError {
        match e {
            ParamError::Unknown(p) => ApiError::invalid(&p, "It is not a parameter of this action."),
            ParamError::Invalid { param, reason } => ApiError::invalid(&param, format!("{reason}.")),
        }
    }
}

/// A JSON answer as the cloud sends it (`application/json;charset=utf-8`, the request ID also
/// in `x-acs-request-id`).
pub fn json_response(status: StatusCode, request_id: &str, body: &serde_json::Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-acs-request-id", v);
    }
    resp
}
