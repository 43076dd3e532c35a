//! Virtual networks and guest interfaces: wire types and [`Client`] calls.
//!
//! Endpoints (`{net}` is a network name or UUID, `{id}` a domain name or UUID, both
//! percent-encoded):
//!
//! | method + path                                          | body                         | reply                    |
//! |--------------------------------------------------------|------------------------------|--------------------------|
//! | `GET /v1/networks`                                     |                              | `[NetworkInfo]`          |
//! | `POST /v1/networks`                                    | [`XmlDocument`]              | [`NetworkInfo`]          |
//! | `GET /v1/networks/{net}`                               |                              | [`NetworkInfo`]          |
//! | `GET /v1/networks/{net}/xml`                           |                              | [`XmlDocument`]          |
//! | `PUT /v1/networks/{net}/xml`                           | [`XmlDocument`]              | [`NetworkInfo`]          |
//! | `DELETE /v1/networks/{net}`                            |                              | [`NetworkInfo`]          |
//! | `POST /v1/networks/{net}/start` / `destroy`            |                              | [`NetworkInfo`]          |
//! | `PUT /v1/networks/{net}/autostart`                     | [`AutostartRequest`]         | [`NetworkInfo`]          |
//! | `GET /v1/networks/{net}/leases`                        |                              | `[NetworkLease]`         |
//! | `GET /v1/domains/{id}/interfaces`                      |                              | `[DomainInterface]`      |
//! | `POST /v1/domains/{id}/interfaces`                     | [`AttachInterfaceRequest`]   | [`DomainInterface`]      |
//! | `DELETE /v1/domains/{id}/interfaces`                   | [`DetachInterfaceRequest`]   | [`DomainInterface`]      |
//! | `GET /v1/domains/{id}/interface-addresses?source=S`    |                              | `[InterfaceAddress]`     |
//! | `GET /v1/domains/{id}/interface-stats/{dev}`           |                              | [`InterfaceStats`]       |

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{
    domain_path, percent_encode_segment, to_json, AutostartRequest, Client, ClientError,
    XmlDocument,
};

/// A defined network (`net-list`, `net-info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkInfo {
    pub name: String,
    pub uuid: String,
    /// Whether the network runs (its bridge, firewall rules and dnsmasq are up).
    pub active: bool,
    /// Always true: oxvirt has no transient networks.
    pub persistent: bool,
    pub autostart: bool,
    /// The bridge device the network uses (also while inactive, the one it would use).
    pub bridge: Option<String>,
}

/// One DHCP lease of a network (`net-dhcp-leases`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkLease {
    /// Unix seconds when the lease expires; `None` for an infinite lease.
    pub expiry_unix: Option<u64>,
    pub mac: String,
    /// "ipv4".
    pub protocol: String,
    /// Address with the network's prefix, e.g. "192.168.122.45/24".
    pub address: String,
    pub hostname: Option<String>,
    pub client_id: Option<String>,
}

/// One network interface of a domain (`domiflist`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainInterface {
    /// The host device (TAP) while the domain runs, `None` otherwise.
    pub target: Option<String>,
    /// "network", "bridge" or "user".
    pub interface_type: String,
    /// The network or bridge name; `None` for type 'user'.
    pub source: Option<String>,
    /// NIC model, e.g. "virtio".
    pub model: Option<String>,
    pub mac: String,
}

/// Where `domifaddr` gets addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AddressSource {
    /// The DHCP leases of the domain's networks.
    Lease,
    /// The host's neighbour (ARP) table on the bridges the domain is attached to.
    Arp,
}

impl AddressSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressSource::Lease => "lease",
            AddressSource::Arp => "arp",
        }
    }
}

/// One address of a domain interface (`domifaddr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InterfaceAddress {
    /// The interface's host device (TAP).
    pub name: String,
    pub mac: String,
    /// "ipv4".
    pub protocol: String,
    /// Address with prefix, e.g. "192.168.122.45/24".
    pub address: String,
}

/// Traffic counters of a domain interface as the guest sees them (`domifstat`): `rx` is what
/// the guest received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InterfaceStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    pub rx_drop: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_drop: u64,
}

/// Body of `POST /v1/domains/{id}/interfaces` (`attach-interface`).
///
/// `live` and `config` as in virsh: `live` changes the running guest (hotplug), `config` the
/// stored definition; neither means "the current state" (live if running, else config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttachInterfaceRequest {
    /// "network" or "bridge".
    pub interface_type: String,
    /// The network or bridge name.
    pub source: String,
    /// NIC model; default "virtio".
    #[serde(default)]
    pub model: Option<String>,
    /// Guest MAC; generated under 52:54:00 when absent.
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

/// Body of `DELETE /v1/domains/{id}/interfaces` (`detach-interface`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DetachInterfaceRequest {
    /// "network", "bridge" or "user".
    pub interface_type: String,
    /// Which interface; may be left out when the domain has one interface of that type.
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

fn network_path(id: &str, suffix: &str) -> String {
    format!("/v1/networks/{}{suffix}", percent_encode_segment(id))
}

impl Client {
    /// `GET /v1/networks`.
    pub async fn list_networks(&self) -> Result<Vec<NetworkInfo>, ClientError> {
        self.call(Method::GET, "/v1/networks".to_string(), None)
            .await
    }

    /// `POST /v1/networks`: define a network (or update an inactive one of that name and uuid).
    pub async fn define_network(&self, xml: &str) -> Result<NetworkInfo, ClientError> {
        let body = to_json(&XmlDocument {
            xml: xml.to_string(),
        });
        self.call(Method::POST, "/v1/networks".to_string(), Some(body))
            .await
    }

    /// `GET /v1/networks/{net}`.
    pub async fn network_info(&self, id: &str) -> Result<NetworkInfo, ClientError> {
        self.call(Method::GET, network_path(id, ""), None).await
    }

    /// `GET /v1/networks/{net}/xml`.
    pub async fn network_xml(&self, id: &str) -> Result<String, ClientError> {
        let doc: XmlDocument = self
            .call(Method::GET, network_path(id, "/xml"), None)
            .await?;
        Ok(doc.xml)
    }

    /// `PUT /v1/networks/{net}/xml`: replace the definition (name and uuid stay).
    pub async fn replace_network_xml(
        &self,
        id: &str,
        xml: &str,
    ) -> Result<NetworkInfo, ClientError> {
        let body = to_json(&XmlDocument {
            xml: xml.to_string(),
        });
        self.call(Method::PUT, network_path(id, "/xml"), Some(body))
            .await
    }

    /// `DELETE /v1/networks/{net}`: undefine.
    pub async fn undefine_network(&self, id: &str) -> Result<NetworkInfo, ClientError> {
        self.call(Method::DELETE, network_path(id, ""), None).await
    }

    /// `POST /v1/networks/{net}/start`.
    pub async fn start_network(&self, id: &str) -> Result<NetworkInfo, ClientError> {
        self.call(Method::POST, network_path(id, "/start"), None)
            .await
    }

    /// `POST /v1/networks/{net}/destroy`.
    pub async fn destroy_network(&self, id: &str) -> Result<NetworkInfo, ClientError> {
        self.call(Method::POST, network_path(id, "/destroy"), None)
            .await
    }

    /// `PUT /v1/networks/{net}/autostart`.
    pub async fn set_network_autostart(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<NetworkInfo, ClientError> {
        let body = to_json(&AutostartRequest { enabled });
        self.call(Method::PUT, network_path(id, "/autostart"), Some(body))
            .await
    }

    /// `GET /v1/networks/{net}/leases`.
    pub async fn network_leases(&self, id: &str) -> Result<Vec<NetworkLease>, ClientError> {
        self.call(Method::GET, network_path(id, "/leases"), None)
            .await
    }

    /// `GET /v1/domains/{id}/interfaces`: the running guest's interfaces, or the definition's.
    pub async fn domain_interfaces(&self, id: &str) -> Result<Vec<DomainInterface>, ClientError> {
        self.call(Method::GET, domain_path(id, "/interfaces"), None)
            .await
    }

    /// `GET /v1/domains/{id}/interface-addresses?source=...`.
    pub async fn domain_interface_addresses(
        &self,
        id: &str,
        source: AddressSource,
    ) -> Result<Vec<InterfaceAddress>, ClientError> {
        let path = domain_path(
            id,
            &format!("/interface-addresses?source={}", source.as_str()),
        );
        self.call(Method::GET, path, None).await
    }

    /// `GET /v1/domains/{id}/interface-stats/{dev}`; `dev` is the TAP name or the guest MAC.
    pub async fn domain_interface_stats(
        &self,
        id: &str,
        device: &str,
    ) -> Result<InterfaceStats, ClientError> {
        let path = domain_path(
            id,
            &format!("/interface-stats/{}", percent_encode_segment(device)),
        );
        self.call(Method::GET, path, None).await
    }

    /// `POST /v1/domains/{id}/interfaces`: attach-interface.
    pub async fn attach_interface(
        &self,
        id: &str,
        request: &AttachInterfaceRequest,
    ) -> Result<DomainInterface, ClientError> {
        self.call(
            Method::POST,
            domain_path(id, "/interfaces"),
            Some(to_json(request)),
        )
        .await
    }

    /// `DELETE /v1/domains/{id}/interfaces`: detach-interface.
    pub async fn detach_interface(
        &self,
        id: &str,
        request: &DetachInterfaceRequest,
    ) -> Result<DomainInterface, ClientError> {
        self.call(
            Method::DELETE,
            domain_path(id, "/interfaces"),
            Some(to_json(request)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_request_defaults_to_the_current_state() {
        let request: AttachInterfaceRequest =
            serde_json::from_str(r#"{"interface_type":"network","source":"default"}"#).unwrap();
        assert!(!request.live && !request.config);
        assert_eq!(request.model, None);
        assert_eq!(request.mac, None);
    }

    #[test]
    fn address_source_is_lowercase_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&AddressSource::Arp).unwrap(),
            "\"arp\""
        );
        assert_eq!(AddressSource::Lease.as_str(), "lease");
    }

    #[test]
    fn network_paths_are_one_segment() {
        assert_eq!(network_path("a b", "/xml"), "/v1/networks/a%20b/xml");
    }
}
