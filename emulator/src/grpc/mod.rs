//! The gRPC face: `enifab.v1.Vpc`, `enifab.v1.Ecs` and `enifab.v1.Emulator`.
//!
//! Handlers only translate: a proto request becomes the model's request struct, the model
//! method runs on the model thread ([`ModelHandle::call`]), and its result is rendered into the
//! proto response with the cloud's field layout. No handler keeps state or makes a decision the
//! model could make, so every face that calls these handlers (the CLI, the HTTP endpoint)
//! behaves the same.

pub mod ecs;
pub mod emulator;
pub mod render;
pub mod status;
pub mod vpc;

use enifab_model::error::Product;
use enifab_model::{Millis, ModelError, Region, Tag};
use enifab_proto::v1 as pb;
use tonic::Status;

use crate::actor::ModelHandle;

/// What every handler needs: the model and which product's error domain it answers in.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub model: ModelHandle,
    pub product: Product,
}

impl Ctx {
    /// Check `RegionId` (empty means the server's region), then run `f` on the model thread.
    pub async fn call<T, F>(&self, request_id: &str, region_id: &str, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&mut Region, Millis) -> Result<T, ModelError> + Send + 'static,
    {
        if !region_id.is_empty() && region_id != self.model.region_id() {
            return Err(status::to_status(
                &ModelError::RegionNotFound(region_id.to_string()),
                self.product,
                request_id,
            ));
        }
        self.model.call(f).await.map_err(|e| status::to_status(&e, self.product, request_id))
    }
}

/// A request ID in the cloud's shape: `473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E`.
pub fn request_id() -> String {
    let mut b = [0u8; 16];
    // A failed random read only makes request IDs less unique; it is not worth failing a call.
    let _ = getrandom::fill(&mut b);
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Empty strings are how proto3 says "not given".
pub(crate) fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub(crate) fn tags(t: Vec<pb::Tag>) -> Vec<Tag> {
    t.into_iter().map(|t| Tag { key: t.key, value: t.value }).collect()
}

/// Counts arrive as int32; negative values are invalid parameters, not huge unsigned ones.
pub(crate) fn count(param: &'static str, v: Option<i32>) -> Result<Option<u32>, ModelError> {
    match v {
        None => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as u32)),
        Some(_) => Err(ModelError::invalid(param, "must not be negative")),
    }
}

/// A comma-separated ID list (`VpcId=vpc-1,vpc-2`).
pub(crate) fn comma_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()
}
