//! An upgrade request on the proxy's side: placed by the policy like any
//! request, tunnelled (by [`super::tunnel`]) when the replica switches
//! protocols, relayed as a plain response when it does not, retried
//! elsewhere only when nothing reached the replica.

use super::*;

impl Proxy {
    /// An upgrade request: tunnelled to the replica the policy picks, or
    /// relayed as a plain response if the replica does not switch.
    pub(super) async fn tunnel(
        &self,
        parts: Parts,
        mut payload: Payload,
        key: u64,
        to: tunnel::Upgrade,
    ) -> Response<Body> {
        let snapshot = self.pool.load_full();
        let mut tried = Tried::new(self.config.retries + 1);
        let mut last_error = UpstreamError::NoReplica;
        for _ in 0..=self.config.retries {
            let Some(index) = self.pick(&snapshot, key, &mut tried) else {
                break;
            };
            let replica: &Arc<Replica> = &snapshot.replicas[index];
            let Some(in_flight) = replica.admit(self.config.queue_timeout).await else {
                last_error = UpstreamError::Busy;
                continue;
            };
            let Some(body) = payload.take() else { break };
            let mut upstream = Request::new(body);
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = parts
                .uri
                .path_and_query()
                .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
            *upstream.headers_mut() = parts.headers.clone();
            tunnel::keep_upgrade_headers(upstream.headers_mut(), to.protocol.clone());
            let opened = tunnel::open(
                replica.addr,
                upstream,
                self.config.connect_timeout,
                self.config.response_timeout,
            )
            .await;
            let why = match opened {
                Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    in_flight.served();
                    let switching = tunnel::switching(&resp);
                    tunnel::join(
                        to,
                        resp,
                        in_flight,
                        self.config.tunnel_idle,
                        self.metrics.clone(),
                    );
                    return switching;
                }
                Ok(resp) => {
                    in_flight.served();
                    return self.relay(
                        resp.map(Answer::Hyper),
                        in_flight,
                        &parts.uri,
                        Call::PLAIN,
                        to.request,
                    );
                }
                Err(tunnel::TunnelError::Connect) => {
                    last_error = UpstreamError::Connect;
                    "could not connect for an upgrade"
                }
                Err(tunnel::TunnelError::Failed) => {
                    last_error = UpstreamError::Failed;
                    "closed an upgrade request before answering"
                }
                Err(tunnel::TunnelError::TimedOut) => {
                    last_error = UpstreamError::Timeout(self.config.response_timeout);
                    "did not answer an upgrade request in time"
                }
            };
            blame(replica, &self.events, || why.to_owned());
            if last_error != UpstreamError::Connect || !payload.replayable() {
                break;
            }
        }
        last_error.response(false)
    }
}
