//! ECS instances, i.e. the nodes: CreateInstance, DescribeInstances, DeleteInstance,
//! StartInstance, StopInstance, DescribeInstanceTypes, and the emulator's CreateInstanceType.
//!
//! An instance is what an ENI attaches to. Creating one creates its Primary ENI (DeviceIndex 0,
//! InUse, released with the instance) in the given vSwitch, with the given private IP if any, as
//! RunInstances does. The instance starts `Running` (CreateInstance in the cloud leaves it
//! `Stopped`; the emulator's nodes are meant to run at once, and StopInstance exists for the
//! state checks). Stop and start go through `Stopping`/`Starting` with the configured delay.
//!
//! DeleteInstance without `Force` requires `Stopped` (`IncorrectInstanceStatus`), as the cloud
//! does. Deleting detaches every secondary, trunk and member ENI (deleting those with
//! DeleteOnRelease) and deletes the primary ENI, all at once.

use serde::{Deserialize, Serialize};

use crate::catalog::InstanceType;
use crate::eni::{Attachment, Eni, EniStatus, EniType, NewEni};
use crate::error::ModelError;
use crate::ids::IdKind;
use crate::paging::{PageBounds, PageInfo, PageRequest, paginate};
use crate::region::{Kind, Region, check_tags, check_text, has_all_tags, parse_ip};
use crate::time::Millis;
use crate::{Result, Tag};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceStatus {
    Starting,
    Running,
    Stopping,
    Stopped,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Starting => "Starting",
            InstanceStatus::Running => "Running",
            InstanceStatus::Stopping => "Stopping",
            InstanceStatus::Stopped => "Stopped",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub instance_id: String,
    pub instance_name: String,
    pub host_name: String,
    pub description: String,
    pub instance_type: String,
    pub zone_id: String,
    pub vpc_id: String,
    pub v_switch_id: String,
    pub primary_eni_id: String,
    pub status: InstanceStatus,
    pub transition_due: Option<Millis>,
    pub tags: Vec<Tag>,
    pub creation_time: Millis,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateInstance {
    pub instance_type: String,
    pub zone_id: Option<String>,
    pub v_switch_id: String,
    pub security_group_ids: Vec<String>,
    pub private_ip_address: Option<String>,
    pub instance_name: Option<String>,
    pub host_name: Option<String>,
    pub description: String,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeInstances {
    pub instance_ids: Vec<String>,
    pub vpc_id: Option<String>,
    pub v_switch_id: Option<String>,
    pub zone_id: Option<String>,
    pub instance_name: Option<String>,
    pub instance_type: Option<String>,
    pub status: Option<String>,
    pub private_ip_addresses: Vec<String>,
    pub tags: Vec<Tag>,
    pub page: PageRequest,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeInstanceTypes {
    pub instance_types: Vec<String>,
    pub instance_type_family: Option<String>,
    pub page: PageRequest,
}

/// An instance with what Describe derives from its ENIs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub instance: Instance,
    /// The instance's own NICs in DeviceIndex order (members are not NICs of the instance).
    pub network_interfaces: Vec<Eni>,
    pub security_group_ids: Vec<String>,
    pub private_ip_address: String,
    pub type_info: Option<InstanceType>,
}

const INSTANCE_PAGES: PageBounds =
    PageBounds { default_size: 10, max_page_size: 100, min_results: 1, max_results: 100 };
const TYPE_PAGES: PageBounds =
    PageBounds { default_size: 1600, max_page_size: 1600, min_results: 1, max_results: 1600 };

/// Parse the cloud's JSON-array parameters (`InstanceIds='["i-1","i-2"]'`).
pub fn parse_json_list(param: &'static str, s: &str) -> Result<Vec<String>> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Vec<String> =
        serde_json::from_str(s).map_err(|_| ModelError::invalid(param, "must be a JSON array of strings"))?;
    if v.len() > 100 {
        return Err(ModelError::invalid(param, "at most 100 values"));
    }
    Ok(v)
}

impl Region {
    pub fn create_instance(&mut self, req: CreateInstance, now: Millis) -> Result<InstanceView> {
        self.idempotent("CreateInstance", req, now, |r, req| {
            if req.instance_type.is_empty() {
                return Err(ModelError::MissingParameter("InstanceType"));
            }
            if req.v_switch_id.is_empty() {
                return Err(ModelError::MissingParameter("VSwitchId"));
            }
            if let Some(name) = &req.instance_name {
                check_text("InstanceName", name, 128)?;
            }
            if !r.types.contains_key(&req.instance_type) {
                return Err(ModelError::InstanceTypeNotFound(req.instance_type.clone()));
            }
            let vsw = r
                .vswitches
                .get(&req.v_switch_id)
                .ok_or_else(|| ModelError::VSwitchNotFound(req.v_switch_id.clone()))?
                .clone();
            if let Some(zone) = req.zone_id.as_deref().filter(|z| !z.is_empty()) {
                r.check_zone(zone)?;
                if zone != vsw.zone_id {
                    return Err(ModelError::AvailabilityZoneMismatch {
                        eni_zone: vsw.zone_id.clone(),
                        instance_zone: zone.to_string(),
                    });
                }
            }
            if req.security_group_ids.is_empty() {
                return Err(ModelError::MissingParameter("SecurityGroupIds"));
            }
            r.check_security_groups(&vsw.vpc_id, &req.security_group_ids)?;
            check_tags(&req.tags)?;
            let primary_ip = req.private_ip_address.as_deref().filter(|s| !s.is_empty()).map(parse_ip).transpose()?;
            // Plan before taking IDs: a failure must not even move the ID counter.
            let plan = r.plan_eni_ips(&vsw.v_switch_id, primary_ip, &[], 0)?;
            let instance_id = r.new_id(IdKind::Instance);
            let port_id = r.new_port();
            let primary = r.insert_eni(
                NewEni {
                    eni_type: EniType::Primary,
                    v_switch_id: vsw.v_switch_id.clone(),
                    security_group_ids: req.security_group_ids.clone(),
                    name: String::new(),
                    description: String::new(),
                    tags: Vec::new(),
                    delete_on_release: true,
                    source_dest_check: false,
                    traffic_mode: "Standard".into(),
                    resource_group_id: String::new(),
                    status: EniStatus::InUse,
                    attachment: Some(Attachment {
                        instance_id: instance_id.clone(),
                        device_index: 0,
                        trunk_network_interface_id: None,
                        network_card_index: 0,
                        port_id,
                    }),
                },
                plan,
                now,
            );
            let short = instance_id.trim_start_matches("i-");
            let instance = Instance {
                instance_id: instance_id.clone(),
                instance_name: req.instance_name.filter(|n| !n.is_empty()).unwrap_or_else(|| instance_id.clone()),
                host_name: req.host_name.filter(|n| !n.is_empty()).unwrap_or_else(|| format!("iZ{short}Z")),
                description: req.description,
                instance_type: req.instance_type,
                zone_id: vsw.zone_id.clone(),
                vpc_id: vsw.vpc_id.clone(),
                v_switch_id: vsw.v_switch_id.clone(),
                primary_eni_id: primary.clone(),
                status: InstanceStatus::Running,
                transition_due: None,
                tags: req.tags,
                creation_time: now,
            };
            r.instances.insert(instance_id.clone(), instance);
            r.mark(Kind::Instance, &instance_id);
            Ok(r.instance_view(&instance_id).expect("just inserted"))
        })
    }

    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.get(id)
    }

    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    pub fn instance_view(&self, id: &str) -> Option<InstanceView> {
        let inst = self.instances.get(id)?;
        let nics: Vec<Eni> =
            self.nics.get(id).into_iter().flat_map(|m| m.values()).filter_map(|e| self.enis.get(e)).cloned().collect();
        let primary = self.enis.get(&inst.primary_eni_id);
        Some(InstanceView {
            instance: inst.clone(),
            security_group_ids: primary.map(|p| p.security_group_ids.clone()).unwrap_or_default(),
            private_ip_address: primary.map(|p| p.primary_ip_address.to_string()).unwrap_or_default(),
            network_interfaces: nics,
            type_info: self.types.get(&inst.instance_type).cloned(),
        })
    }

    pub fn describe_instances(
        &mut self,
        req: &DescribeInstances,
        now: Millis,
    ) -> Result<(Vec<InstanceView>, PageInfo)> {
        self.advance(now);
        let items: Vec<InstanceView> = self
            .instances
            .values()
            .filter(|i| req.instance_ids.is_empty() || req.instance_ids.contains(&i.instance_id))
            .filter(|i| req.vpc_id.as_ref().is_none_or(|x| &i.vpc_id == x))
            .filter(|i| req.v_switch_id.as_ref().is_none_or(|x| &i.v_switch_id == x))
            .filter(|i| req.zone_id.as_ref().is_none_or(|x| &i.zone_id == x))
            .filter(|i| req.instance_name.as_ref().is_none_or(|x| &i.instance_name == x))
            .filter(|i| req.instance_type.as_ref().is_none_or(|x| &i.instance_type == x))
            .filter(|i| req.status.as_ref().is_none_or(|x| i.status.as_str() == x))
            .filter(|i| has_all_tags(&i.tags, &req.tags))
            .filter_map(|i| self.instance_view(&i.instance_id))
            .filter(|v| req.private_ip_addresses.is_empty() || req.private_ip_addresses.contains(&v.private_ip_address))
            .collect();
        paginate(items, |v| &v.instance.instance_id, &req.page, INSTANCE_PAGES)
    }

    pub fn delete_instance(&mut self, id: &str, force: bool, now: Millis) -> Result<()> {
        self.advance(now);
        let inst = self.instances.get(id).ok_or_else(|| ModelError::InstanceNotFound(id.to_string()))?;
        if !force && inst.status != InstanceStatus::Stopped {
            return Err(ModelError::IncorrectInstanceStatus(inst.status.as_str()));
        }
        let nics: Vec<String> = self.nics.get(id).into_iter().flat_map(|m| m.values().cloned()).collect();
        for nic in &nics {
            let members: Vec<String> = self.members.get(nic).into_iter().flat_map(|m| m.values().cloned()).collect();
            for m in members {
                self.release_from_instance(&m);
            }
        }
        for nic in &nics {
            self.release_from_instance(nic);
        }
        self.instances.remove(id);
        self.nics.remove(id);
        self.mark(Kind::Instance, id);
        Ok(())
    }

    /// Detach an ENI at once because its instance is going away; delete it if it is the primary
    /// or has DeleteOnRelease.
    fn release_from_instance(&mut self, eni_id: &str) {
        let Some(eni) = self.enis.get(eni_id) else {
            return;
        };
        let delete = eni.eni_type == EniType::Primary || eni.delete_on_release;
        self.finish_detach(eni_id);
        if delete {
            self.remove_eni(eni_id);
        }
    }

    pub fn stop_instance(&mut self, id: &str, now: Millis) -> Result<()> {
        self.advance(now);
        let inst = self.instances.get(id).ok_or_else(|| ModelError::InstanceNotFound(id.to_string()))?;
        match inst.status {
            InstanceStatus::Stopped | InstanceStatus::Stopping => Ok(()),
            InstanceStatus::Starting => Err(ModelError::IncorrectInstanceStatus(inst.status.as_str())),
            InstanceStatus::Running => {
                self.begin_instance_transition(id, InstanceStatus::Stopping, now);
                Ok(())
            }
        }
    }

    pub fn start_instance(&mut self, id: &str, now: Millis) -> Result<()> {
        self.advance(now);
        let inst = self.instances.get(id).ok_or_else(|| ModelError::InstanceNotFound(id.to_string()))?;
        match inst.status {
            InstanceStatus::Running | InstanceStatus::Starting => Ok(()),
            InstanceStatus::Stopping => Err(ModelError::IncorrectInstanceStatus(inst.status.as_str())),
            InstanceStatus::Stopped => {
                self.begin_instance_transition(id, InstanceStatus::Starting, now);
                Ok(())
            }
        }
    }

    fn begin_instance_transition(&mut self, id: &str, via: InstanceStatus, now: Millis) {
        let due = now.saturating_add_ms(self.config.delays.start_stop_ms);
        let inst = self.instances.get_mut(id).expect("caller checked");
        inst.status = via;
        inst.transition_due = Some(due);
        self.mark(Kind::Instance, id);
        if due <= now {
            self.complete_instance_transition(id, due);
        } else {
            self.schedule(Kind::Instance, id, due);
        }
    }

    pub(crate) fn complete_instance_transition(&mut self, id: &str, due: Millis) {
        let Some(inst) = self.instances.get_mut(id) else {
            return;
        };
        if inst.transition_due != Some(due) {
            return;
        }
        let next = match inst.status {
            InstanceStatus::Starting => InstanceStatus::Running,
            InstanceStatus::Stopping => InstanceStatus::Stopped,
            _ => return,
        };
        inst.status = next;
        inst.transition_due = None;
        self.mark(Kind::Instance, id);
    }

    pub fn describe_instance_types(
        &mut self,
        req: &DescribeInstanceTypes,
        now: Millis,
    ) -> Result<(Vec<InstanceType>, PageInfo)> {
        self.advance(now);
        if req.instance_types.len() > 10 {
            return Err(ModelError::invalid("InstanceTypes.N", "at most 10 values"));
        }
        let items: Vec<InstanceType> = self
            .types
            .values()
            .filter(|t| req.instance_types.is_empty() || req.instance_types.contains(&t.instance_type_id))
            .filter(|t| req.instance_type_family.as_ref().is_none_or(|f| &t.instance_type_family == f))
            .cloned()
            .collect();
        paginate(items, |t| &t.instance_type_id, &req.page, TYPE_PAGES)
    }

    /// Add a custom instance type (an emulator extension; the cloud's catalogue is fixed).
    /// Re-adding an identical type is a no-op; redefining a type that instances use is refused.
    pub fn create_instance_type(&mut self, mut t: InstanceType, now: Millis) -> Result<InstanceType> {
        self.advance(now);
        t.custom = true;
        if t.instance_type_id.is_empty() {
            return Err(ModelError::MissingParameter("InstanceTypeId"));
        }
        if !t.instance_type_id.starts_with("ecs.") || t.instance_type_id.len() > 64 {
            return Err(ModelError::invalid("InstanceTypeId", "must look like ecs.<family>.<size>"));
        }
        if t.eni_quantity == 0 || t.eni_private_ip_address_quantity == 0 {
            return Err(ModelError::invalid(
                "EniQuantity",
                "EniQuantity and EniPrivateIpAddressQuantity must be at least 1",
            ));
        }
        if t.eni_total_quantity < t.eni_quantity {
            return Err(ModelError::invalid("EniTotalQuantity", "must be at least EniQuantity"));
        }
        if t.instance_type_family.is_empty() {
            t.instance_type_family =
                t.instance_type_id.rsplit_once('.').map(|(f, _)| f.to_string()).unwrap_or_default();
        }
        match self.types.get(&t.instance_type_id) {
            Some(old) if *old == t => return Ok(t),
            Some(old) if !old.custom => {
                return Err(ModelError::invalid("InstanceTypeId", "built-in instance types cannot be redefined"));
            }
            Some(_) if self.instances.values().any(|i| i.instance_type == t.instance_type_id) => {
                return Err(ModelError::DependencyViolation(format!("instances use {}", t.instance_type_id)));
            }
            _ => {}
        }
        self.types.insert(t.instance_type_id.clone(), t.clone());
        self.mark(Kind::InstanceType, &t.instance_type_id);
        Ok(t)
    }
}
