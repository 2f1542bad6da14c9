//! [`ModelError`] → `tonic::Status`, the gRPC face of the cloud's error codes.
//!
//! The status message starts with the cloud code (`InvalidEniId.NotFound: The specified EniId
//! …`), and a `google.rpc.ErrorInfo` detail carries the code as `reason`, the product endpoint as
//! `domain` (`ecs.aliyuncs.com`, `vpc.aliyuncs.com`, `slb.aliyuncs.com`) and the cloud's HTTP status and the request
//! ID as metadata, so a client can branch on the same string Terway branches on.

use std::collections::HashMap;

use enifab_model::ModelError;
use enifab_model::error::Product;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The gRPC code closest to what the cloud's error means.
pub fn grpc_code(e: &ModelError) -> Code {
    use ModelError::*;
    match e {
        Throttling | QuotaExceededPrivateIpAddress => Code::ResourceExhausted,
        InternalError => Code::Internal,
        ServiceUnavailable => Code::Unavailable,
        IdempotentProcessing | OperationConflict => Code::Aborted,
        IdempotentFailed => Code::FailedPrecondition,
        ForbiddenRam => Code::PermissionDenied,
        IdempotentParameterMismatch | ListenerAlreadyExists(_) => Code::AlreadyExists,
        LoadBalancerNotFound(_)
        | VServerGroupNotFound(_)
        | ListenerVServerGroupNotFound(_)
        | ServerIdNotExist(_)
        | ResourceNotExist(_)
        | SlbVSwitchNotExist(_)
        | SlbVpcNotExist(_) => Code::NotFound,
        VSwitchAvailableIpNotExist(_)
        | RegionResourceLimit
        | BackendServerNumberOverLimit
        | SizeLimitExceededTag(_) => Code::ResourceExhausted,
        DeleteProtectionIsOn | RspoolVipExist | NetworkConflict(_) => Code::FailedPrecondition,
        VSwitchIpNotEnough(_)
        | EniPerInstanceLimitExceeded(_)
        | Ipv4CountExceeded(_)
        | JoinedGroupLimitExceed(_)
        | AuthorizationLimitExceed(_)
        | VSwitchQuotaExceeded => Code::ResourceExhausted,
        InvalidEniState { .. }
        | InvalidEcsState(_)
        | IncorrectInstanceStatus(_)
        | DependencyViolation(_)
        | DependencyViolationVSwitch
        | DependencyViolationSecurityGroup
        | DetachPrimaryEniNotAllowed
        | InvalidEniType(_)
        | PrimaryEniOnlyNameAndDescription
        | IpUnassigned(_)
        | PrivateIpDuplicated(_) => Code::FailedPrecondition,
        _ if e.http_status() == 404 => Code::NotFound,
        _ => Code::InvalidArgument,
    }
}

pub fn to_status(e: &ModelError, product: Product, request_id: &str) -> Status {
    let metadata = HashMap::from([
        ("http_status".to_string(), e.http_status().to_string()),
        ("request_id".to_string(), request_id.to_string()),
    ]);
    let details = ErrorDetails::with_error_info(e.code(), product.domain(), metadata);
    Status::with_error_details(grpc_code(e), format!("{}: {e}", e.code()), details)
}

/// A refusal that is not the model's (a bad signature, a caller without the right): the cloud
/// code, message and HTTP status of `e`, carried as [`to_status`] carries the model's, with the
/// gRPC code `code`.
pub fn refusal(e: &crate::openapi::error::ApiError, code: Code, product: Product, request_id: &str) -> Status {
    let metadata = HashMap::from([
        ("http_status".to_string(), e.status.to_string()),
        ("request_id".to_string(), request_id.to_string()),
    ]);
    let details = ErrorDetails::with_error_info(e.code.as_str(), product.domain(), metadata);
    Status::with_error_details(code, format!("{}: {}", e.code, e.message), details)
}

/// The cloud code and message of a status produced by [`to_status`], for clients.
pub fn cloud_error(status: &Status) -> Option<(String, String)> {
    let info = status.get_details_error_info()?;
    let message = cloud_message(status, &info.reason).to_string();
    Some((info.reason, message))
}

/// The cloud's message of a status produced by [`to_status`] for `code`: without the code that
/// [`to_status`] puts in front for gRPC clients.
pub fn cloud_message<'a>(status: &'a Status, code: &str) -> &'a str {
    let m = status.message();
    m.strip_prefix(code).and_then(|rest| rest.strip_prefix(": ")).unwrap_or(m)
}
