//! DHCP, TFTP and HTTP servers for network-booting old PCs into a mosboot cluster.
//!
//! The crate knows nothing about cluster configs or images: the `mosboot` binary turns its address
//! plan into a [`dhcp::DhcpConfig`] and a [`tftp::TftpConfig`] (and an [`http::HttpConfig`]) and listens for [`events::BootEvent`]s.

pub mod dhcp;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod leases;
pub mod mac;
pub mod node_report;
pub mod spool;
pub mod statedir;
pub mod tftp;
