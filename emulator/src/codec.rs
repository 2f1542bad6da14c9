//! The cloud's wire shapes, derived from the proto descriptors instead of written per action.
//!
//! Alibaba's RPC-style API flattens requests into string parameters (`VSwitchId=vsw-…`,
//! `SecurityGroupIds.1=sg-…`, `Tag.1.Key=creator`, `Permissions.2.PortRange=80/80`) and answers
//! with PascalCase JSON. Because every `enifab.v1` field is the snake_case of the cloud's name, the
//! descriptor of a request message is enough to parse its flat parameters, and the descriptor of a
//! response is enough to print the cloud's JSON. The CLI uses this today; the cloud-compatible
//! HTTP endpoint uses the same functions, so a parameter means the same thing on every face.
//!
//! Rules: names are matched exactly (PascalCase of the proto field name; a name with a lower-case
//! first letter also matches its capitalised spelling, as the SLB API needs); list indices are
//! 1-based and at most [`MAX_INDEX`]; an index-less value on a list field appends; booleans are
//! `true`/`false`; integers are decimal. Unknown parameters are an error in strict mode (the CLI,
//! where they are typos) and are skipped otherwise.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, ReflectMessage, Value,
};

/// The largest `.N` index accepted: the cloud's lists stop at 100 (`PrivateIpAddress.N` 1–100).
pub const MAX_INDEX: u32 = 1000;

/// The descriptor pool of `enifab.v1`.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(enifab_proto::FILE_DESCRIPTOR_SET).expect("the embedded descriptor set is valid")
    })
}

/// The method `/enifab.v1.<service>/<action>`, if it exists.
pub fn method(service: &str, action: &str) -> Option<MethodDescriptor> {
    pool().get_service_by_name(&format!("enifab.v1.{service}"))?.methods().find(|m| m.name() == action)
}

/// The action names of a service, sorted.
pub fn actions(service: &str) -> Vec<String> {
    let mut v: Vec<String> = pool()
        .get_service_by_name(&format!("enifab.v1.{service}"))
        .map(|s| s.methods().map(|m| m.name().to_string()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// `v_switch_id` → `VSwitchId`, the cloud's spelling of a proto field.
pub fn pascal(snake: &str) -> String {
    pascal_chars(snake).collect()
}

/// The characters of [`pascal`]`(snake)`, without building the string: every field of a
/// request is compared with every parameter name, on every call.
fn pascal_chars(snake: &str) -> impl Iterator<Item = char> + '_ {
    let mut upper = true;
    snake.chars().filter_map(move |c| {
        if c == '_' {
            upper = true;
            return None;
        }
        let c = if upper { c.to_ascii_uppercase() } else { c };
        upper = false;
        Some(c)
    })
}

/// Why a parameter could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The parameter "{0}" is not a parameter of this action.
    #[error("The parameter \"{0}\" is not a parameter of this action.")]
    Unknown(String),
    #[error("The specified parameter \"{param}\" is not valid: {reason}")]
    Invalid { param: String, reason: String },
}

impl ParamError {
    pub fn param(&self) -> &str {
        match self {
            ParamError::Unknown(p) | ParamError::Invalid { param: p, .. } => p,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Index(u32),
    Name(String),
}

#[derive(Debug, Default)]
struct Tree {
    /// A value given for exactly this path (several for repeated index-less values).
    values: Vec<(String, String)>,
    children: BTreeMap<Seg, Tree>,
}

fn invalid(param: &str, reason: impl Into<String>) -> ParamError {
    ParamError::Invalid { param: param.to_string(), reason: reason.into() }
}

/// Build the request message `desc` from flat cloud parameters.
pub fn params_to_message(
    desc: &MessageDescriptor,
    params: &[(String, String)],
    strict: bool,
) -> Result<DynamicMessage, ParamError> {
    let mut root = Tree::default();
    for (key, value) in params {
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(invalid(key, "empty name segment"));
        }
        let mut node = &mut root;
        for seg in key.split('.') {
            let seg = if seg.bytes().all(|b| b.is_ascii_digit()) {
                match seg.parse::<u32>() {
                    Ok(n) if (1..=MAX_INDEX).contains(&n) => Seg::Index(n),
                    _ => return Err(invalid(key, format!("list index must be 1 to {MAX_INDEX}"))),
                }
            } else {
                Seg::Name(seg.to_string())
            };
            node = node.children.entry(seg).or_default();
        }
        node.values.push((key.clone(), value.clone()));
    }
    build(desc, &root, "", strict)
}

fn field_by_pascal(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    desc.fields().find(|f| pascal_chars(f.name()).eq(name.chars())).or_else(|| {
        // The SLB API spells a few parameters with a lower-case first letter
        // (`healthCheckInterval` on CreateLoadBalancerTCPListener, `healthCheckReq`,
        // `healthCheckExp`) and the capitalised name elsewhere; the SDKs send what the API
        // reference says. So a name that starts lower-case also names the field its capitalised
        // spelling names. Looked for only when the exact name is not a field.
        let mut rest = name.chars();
        let first = rest.next().filter(char::is_ascii_lowercase)?;
        let capitalised = std::iter::once(first.to_ascii_uppercase()).chain(rest);
        desc.fields().find(|f| pascal_chars(f.name()).eq(capitalised.clone()))
    })
}

fn build(desc: &MessageDescriptor, node: &Tree, prefix: &str, strict: bool) -> Result<DynamicMessage, ParamError> {
    let mut msg = DynamicMessage::new(desc.clone());
    if let Some((key, _)) = node.values.first() {
        return Err(invalid(key, "a structure cannot take a single value"));
    }
    for (seg, child) in &node.children {
        let Seg::Name(name) = seg else {
            return Err(invalid(prefix, "unexpected list index"));
        };
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        let Some(field) = field_by_pascal(desc, name) else {
            if strict {
                return Err(ParamError::Unknown(path));
            }
            continue;
        };
        let value = if field.is_list() {
            let mut items = Vec::new();
            for (key, raw) in &child.values {
                items.push(element(&field, key, raw)?);
            }
            for (seg, grand) in &child.children {
                let Seg::Index(i) = seg else {
                    return Err(invalid(&path, "a list needs an index: Name.N"));
                };
                let item_path = format!("{path}.{i}");
                if let Some(max) = index_limit(&field).filter(|max| *i > *max) {
                    return Err(invalid(&item_path, format!("N is 1 to {max}")));
                }
                match field.kind() {
                    Kind::Message(m) => items.push(Value::Message(build(&m, grand, &item_path, strict)?)),
                    _ => {
                        if !grand.children.is_empty() || grand.values.len() != 1 {
                            return Err(invalid(&item_path, "expected one value"));
                        }
                        let (key, raw) = &grand.values[0];
                        items.push(element(&field, key, raw)?);
                    }
                }
            }
            Value::List(items)
        } else if let Kind::Message(m) = field.kind() {
            Value::Message(build(&m, child, &path, strict)?)
        } else {
            if !child.children.is_empty() {
                return Err(invalid(&path, "a single value takes no sub-parameters"));
            }
            if child.values.len() != 1 {
                return Err(invalid(&path, "given more than once"));
            }
            let (key, raw) = &child.values[0];
            element(&field, key, raw)?
        };
        msg.set_field(&field, value);
    }
    Ok(msg)
}

/// A list whose `.N` the cloud bounds more tightly than [`MAX_INDEX`]: `Tag.N` is 1 to 20 (ECS
/// TagResources' API reference: "Valid values of N: 1 to 20"; the other actions that take tags
/// say the same). Without it `Tag.1000.Key` was one tag, since the index only orders the list.
/// The code is `InvalidParameter`, as the model answers for more than 20 tags: the references
/// name no code of their own for an index out of range.
fn index_limit(field: &FieldDescriptor) -> Option<u32> {
    (field.name() == "tag").then_some(20)
}

fn element(field: &FieldDescriptor, key: &str, raw: &str) -> Result<Value, ParamError> {
    let bad = |what: &str| invalid(key, format!("expected {what}, got {raw:?}"));
    Ok(match field.kind() {
        Kind::String => Value::String(raw.to_string()),
        Kind::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad("true or false")),
        },
        // The range in the message: "99999999999" is a number, just not one this parameter holds.
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(raw.trim().parse().map_err(|_| bad(&format!("an integer from {} to {}", i32::MIN, i32::MAX)))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(raw.trim().parse().map_err(|_| bad(&format!("an integer from {} to {}", i64::MIN, i64::MAX)))?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(raw.trim().parse().map_err(|_| bad(&format!("an integer from 0 to {}", u32::MAX)))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(raw.trim().parse().map_err(|_| bad(&format!("an integer from 0 to {}", u64::MAX)))?)
        }
        Kind::Float => Value::F32(raw.trim().parse().map_err(|_| bad("a number"))?),
        Kind::Double => Value::F64(raw.trim().parse().map_err(|_| bad("a number"))?),
        Kind::Bytes | Kind::Enum(_) | Kind::Message(_) => {
            return Err(invalid(key, "not a scalar parameter"));
        }
    })
}

/// Render a message as the cloud's JSON: PascalCase keys, every scalar field present (as the
/// cloud sends `"Description": ""`), unset messages and unset optional fields left out.
pub fn message_to_json(msg: &DynamicMessage) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for field in msg.descriptor().fields() {
        if field.supports_presence() && !msg.has_field(&field) {
            continue;
        }
        out.insert(pascal(field.name()), value_to_json(&msg.get_field(&field)));
    }
    serde_json::Value::Object(out)
}

fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Bool(b) => J::Bool(*b),
        Value::I32(n) => J::from(*n),
        Value::I64(n) => J::from(*n),
        Value::U32(n) => J::from(*n),
        Value::U64(n) => J::from(*n),
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.clone()),
        Value::Bytes(b) => J::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        Value::EnumNumber(n) => J::from(*n),
        Value::Message(m) => message_to_json(m),
        Value::List(items) => J::Array(items.iter().map(value_to_json).collect()),
        Value::Map(_) => J::Null,
    }
}

/// The JSON of any generated `enifab.v1` message.
pub fn to_json<M: prost::Message + prost::Name>(m: &M) -> serde_json::Value {
    let desc = pool().get_message_by_name(&M::full_name()).expect("generated messages are in the pool");
    let dynamic = DynamicMessage::decode(desc, m.encode_to_vec().as_slice())
        .expect("a message re-decodes with its own descriptor");
    message_to_json(&dynamic)
}

/// A tonic codec for messages known only by descriptor (the CLI calls any action by name).
pub mod dynamic {
    use bytes_shim::{Buf, BufMut};
    use prost::Message;
    use prost_reflect::{DynamicMessage, MessageDescriptor};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    /// `prost` re-exports the `bytes` traits the codec buffers implement.
    mod bytes_shim {
        pub use prost::bytes::{Buf, BufMut};
    }

    #[derive(Clone, Debug)]
    pub struct DynCodec {
        pub output: MessageDescriptor,
    }

    #[derive(Debug)]
    pub struct DynEncoder;

    #[derive(Debug)]
    pub struct DynDecoder(MessageDescriptor);

    impl Codec for DynCodec {
        type Encode = DynamicMessage;
        type Decode = DynamicMessage;
        type Encoder = DynEncoder;
        type Decoder = DynDecoder;

        fn encoder(&mut self) -> DynEncoder {
            DynEncoder
        }

        fn decoder(&mut self) -> DynDecoder {
            DynDecoder(self.output.clone())
        }
    }

    impl Encoder for DynEncoder {
        type Item = DynamicMessage;
        type Error = Status;

        fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            let bytes = item.encode_to_vec();
            dst.put_slice(&bytes);
            Ok(())
        }
    }

    impl Decoder for DynDecoder {
        type Item = DynamicMessage;
        type Error = Status;

        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            DynamicMessage::decode(self.0.clone(), bytes)
                .map(Some)
                .map_err(|e| Status::internal(format!("decoding the response: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use enifab_proto::v1 as pb;

    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn field_names_in_the_clouds_spelling() {
        for (snake, cloud) in [
            ("v_switch_id", "VSwitchId"),
            ("network_interface_set", "NetworkInterfaceSet"),
            ("private_ip_address", "PrivateIpAddress"),
            ("region_id", "RegionId"),
            ("a__b", "AB"),
            ("_x", "X"),
        ] {
            assert_eq!(pascal(snake), cloud);
            assert!(pascal_chars(snake).eq(cloud.chars()));
        }
    }

    #[test]
    fn flat_parameters_become_the_request() {
        let m = method("Ecs", "CreateNetworkInterface").unwrap();
        let msg = params_to_message(
            &m.input(),
            &p(&[
                ("VSwitchId", "vsw-1"),
                ("SecurityGroupIds.2", "sg-b"),
                ("SecurityGroupIds.1", "sg-a"),
                ("InstanceType", "Trunk"),
                ("Tag.1.Key", "creator"),
                ("Tag.1.Value", "terway"),
                ("SecondaryPrivateIpAddressCount", "2"),
                ("SourceDestCheck", "false"),
            ]),
            true,
        )
        .unwrap();
        let req: pb::CreateNetworkInterfaceRequest = msg.transcode_to().unwrap();
        assert_eq!(req.v_switch_id, "vsw-1");
        assert_eq!(req.security_group_ids, vec!["sg-a", "sg-b"]);
        assert_eq!(req.instance_type, "Trunk");
        assert_eq!(req.tag, vec![pb::Tag { key: "creator".into(), value: "terway".into() }]);
        assert_eq!(req.secondary_private_ip_address_count, Some(2));
        assert_eq!(req.source_dest_check, Some(false));
    }

    #[test]
    fn a_lower_case_first_letter_names_the_same_field() {
        let m = method("Slb", "CreateLoadBalancerTCPListener").unwrap();
        let msg = params_to_message(
            &m.input(),
            &p(&[("healthCheckInterval", "7"), ("HealthCheckURI", "/healthz"), ("ListenerPort", "80")]),
            true,
        )
        .unwrap();
        let req: pb::CreateLoadBalancerTcpListenerRequest = msg.transcode_to().unwrap();
        assert_eq!((req.health_check_interval, req.health_check_u_r_i.as_str()), (Some(7), "/healthz"));
        assert_eq!(req.listener_port, Some(80));
        let u = method("Slb", "CreateLoadBalancerUDPListener").unwrap();
        let msg =
            params_to_message(&u.input(), &p(&[("healthCheckReq", "ping"), ("healthCheckExp", "pong")]), true).unwrap();
        let req: pb::CreateLoadBalancerUdpListenerRequest = msg.transcode_to().unwrap();
        assert_eq!((req.health_check_req.as_str(), req.health_check_exp.as_str()), ("ping", "pong"));
        // Only the first letter: other case differences are still unknown names.
        let err = params_to_message(&m.input(), &p(&[("healthcheckinterval", "7")]), true).unwrap_err();
        assert_eq!(err, ParamError::Unknown("healthcheckinterval".into()));
    }

    #[test]
    fn bad_parameters_are_named() {
        let m = method("Ecs", "CreateNetworkInterface").unwrap();
        let err = |pairs: &[(&str, &str)]| params_to_message(&m.input(), &p(pairs), true).unwrap_err();
        assert_eq!(err(&[("VSwitchID", "x")]), ParamError::Unknown("VSwitchID".into()));
        assert_eq!(err(&[("SecondaryPrivateIpAddressCount", "two")]).param(), "SecondaryPrivateIpAddressCount");
        assert_eq!(err(&[("SecurityGroupIds.0", "sg")]).param(), "SecurityGroupIds.0");
        assert_eq!(err(&[("SecurityGroupIds.99999", "sg")]).param(), "SecurityGroupIds.99999");
        assert_eq!(err(&[("Tag.1", "x")]).param(), "Tag.1");
        assert!(params_to_message(&m.input(), &p(&[("Bogus", "1")]), false).is_ok(), "lenient mode skips");
    }

    #[test]
    fn responses_print_in_the_cloud_layout() {
        let resp = pb::DescribeNetworkInterfacesResponse {
            request_id: "R".into(),
            network_interface_sets: Some(pb::NetworkInterfaceSets {
                network_interface_set: vec![pb::NetworkInterfaceSet {
                    network_interface_id: "eni-1".into(),
                    r#type: "Member".into(),
                    attachment: Some(pb::Attachment { device_index: 5, ..Default::default() }),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        let j = to_json(&resp);
        let set = &j["NetworkInterfaceSets"]["NetworkInterfaceSet"][0];
        assert_eq!(set["NetworkInterfaceId"], "eni-1");
        assert_eq!(set["Type"], "Member");
        assert_eq!(set["Attachment"]["DeviceIndex"], 5);
        assert_eq!(set["VSwitchId"], "");
        assert!(set.get("PrivateIpSets").is_none(), "unset messages are left out");
        assert_eq!(j["RequestId"], "R");
    }
}
