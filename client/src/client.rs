//! [`Client`]: the typed calls, over one shared, pipelined connection.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardline_protocol::{
    AddServersRequest, Consistency, InitRequest, Message, Request, Response, Row, SessionToken, ShardCommit, ShardId,
    ShardPosition, ShardRows, Topology, WriteBatch, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PAYLOAD,
};
use tokio::sync::Mutex;

use shardline_protocol::net::auth::Credential;
use shardline_protocol::net::tls::ClientTls;
use shardline_protocol::net::Outgoing;

use crate::connection::Connection;
use crate::direct::Router;
use crate::error::ClientError;

/// How a [`Client`] talks to its server: a validated value with documented defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long one call may wait for its answer (default 10 s).
    pub timeout: Duration,
    /// How long an admin call (init, add, rm) may take: they start processes and copy
    /// data (default 120 s).
    pub admin_timeout: Duration,
    /// How long connecting may take (default 5 s).
    pub connect_timeout: Duration,
    /// Largest frame payload sent or accepted (default 16 MiB, the servers' default).
    pub max_payload: usize,
    /// Calls open at once on the connection; more wait for a slot (default 1024, the
    /// servers' default limit).
    pub max_in_flight: usize,
    /// How many times a call that can safely be repeated (everything but init, add and rm)
    /// is sent again after a broken connection or a timeout (default 2). Writes are sent
    /// again with the same client id and sequence, so they apply at most once.
    pub retries: u32,
    /// The user and secret to authenticate with (default `None`: this process's own,
    /// [`shardline_protocol::net::auth::set_outgoing`], if any; else none, which a server
    /// with no credentials configured accepts).
    pub credential: Option<Credential>,
    /// TLS: the CA the server's certificate must chain to ([`ClientTls::load`] reads a PEM
    /// file). Default `None`: this process's own
    /// ([`shardline_protocol::net::tls::set_outgoing`]), if any; else in the clear.
    pub tls: Option<ClientTls>,
    /// The consistency level of [`Client::read`] (default `any`; see
    /// [`Client::read_at`] to choose per call). A `session` level carries this client's
    /// own session token, whatever positions it names here.
    pub read_consistency: Consistency,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            timeout: Duration::from_secs(10),
            admin_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            retries: 2,
            credential: None,
            tls: None,
            read_consistency: Consistency::Any,
        }
    }
}

impl ClientConfig {
    /// The TLS and credential connections present: this config's, else this process's.
    pub(crate) fn outgoing(&self) -> Outgoing {
        Outgoing {
            tls: self.tls.clone().or_else(shardline_protocol::net::tls::outgoing),
            credential: self.credential.clone().or_else(shardline_protocol::net::auth::outgoing),
        }
    }

    /// Checks that the values make sense.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |m: &str| Err(ClientError::InvalidRequest(m.to_owned()));
        if self.timeout.is_zero() || self.admin_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("timeouts must be above zero");
        }
        if self.max_in_flight == 0 || self.max_payload < 1024 {
            return bad("max_in_flight must be above zero and max_payload at least 1 KiB");
        }
        Ok(())
    }
}

/// What a write, update or delete did: one commit per shard it touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResult {
    /// Per shard: the log entry's term and index, and the replicas that held it durably.
    pub commits: Vec<ShardCommit>,
}

impl WriteResult {
    /// Rows the write touched, over every shard.
    pub fn rows(&self) -> u64 {
        self.commits.iter().map(|c| c.rows).sum()
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// The balancer (or coordinator) addresses, one or more.
    addrs: Vec<String>,
    /// The index in `addrs` of the one connected to (or to try next).
    current: AtomicUsize,
    config: ClientConfig,
    client_id: u64,
    seq: AtomicU64,
    conn: std::sync::Mutex<Option<Arc<Connection>>>,
    /// Held while connecting, so one connect at a time.
    connecting: Mutex<()>,
    /// Routing in the client: requests go straight to the nodes (then `addr` is the
    /// coordinator's).
    router: Option<Router>,
    /// The highest position this client saw per shard (acknowledgements, read answers).
    pub(crate) session: std::sync::Mutex<SessionToken>,
}

impl Inner {
    /// A client's shared state, with a fresh client id and no connection yet.
    fn new(addrs: Vec<String>, config: ClientConfig, router: Option<Router>) -> Inner {
        Inner {
            addrs,
            current: AtomicUsize::new(0),
            config,
            client_id: shardline_protocol::quorum::random_client_id(),
            seq: AtomicU64::new(1),
            conn: std::sync::Mutex::new(None),
            connecting: Mutex::new(()),
            router,
            session: Default::default(),
        }
    }
}

/// A connection to a Shardline balancer (or coordinator, for admin calls), shared by its
/// clones: each clone's calls travel on the same pipelined connection, so many can be in
/// flight at once.
///
/// ```no_run
/// # async fn example() -> Result<(), shardline::ClientError> {
/// use shardline::{Client, Row, Value};
///
/// let client = Client::connect("127.0.0.1:7000").await?;
/// let done = client.write(&[Row::new(42, vec![Value::Str("alice".into()), Value::Int(77)])]).await?;
/// println!("committed at index {}", done.commits[0].index);
/// let rows = client.read(0..=100).await?;
/// assert_eq!(rows[0].key, 42);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to `addr` (`host:port`) with the default [`ClientConfig`]. `addr` may list
    /// several balancers, comma-separated (`a:7000,b:7000`): see [`Client::connect_with`].
    pub async fn connect(addr: impl Into<String>) -> Result<Client, ClientError> {
        Client::connect_with(addr, ClientConfig::default()).await
    }

    /// Connects to `addr` with `config`. With several balancers (`a:7000,b:7000`) the
    /// client uses one at a time and moves to the next when it cannot connect or its
    /// connection breaks; the call is then sent again there under the usual retry rules
    /// (never init, add or rm; a write with the same client id and sequence, so it
    /// applies at most once).
    pub async fn connect_with(addr: impl Into<String>, config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        let addr = addr.into();
        let mut addrs: Vec<String> =
            addr.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
        if addrs.is_empty() {
            addrs.push(addr);
        }
        let client = Client { inner: Arc::new(Inner::new(addrs, config, None)) };
        client.connection().await?;
        Ok(client)
    }

    /// A client that routes by itself instead of through a balancer: it follows the
    /// topology of the coordinator at `coordinator` and sends each request straight to the
    /// storage node that serves it, with the balancer's rules for routing, retries and
    /// idempotence (see [`crate::direct`]); `pool_size` connections per node are shared by
    /// every clone. Admin operations go to the coordinator.
    pub async fn connect_direct(
        coordinator: impl Into<String>,
        config: ClientConfig,
        pool_size: usize,
    ) -> Result<Client, ClientError> {
        config.validate()?;
        let coordinator = coordinator.into();
        let router = Router::start(&coordinator, &config, pool_size)?;
        let client = Client { inner: Arc::new(Inner::new(vec![coordinator], config, Some(router))) };
        // Connected once the router has a topology: ask for one through it.
        client.status().await?;
        Ok(client)
    }

    /// The shared state, for the other modules' `impl Client` blocks.
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Whether this client routes by itself ([`Client::connect_direct`]).
    pub fn is_direct(&self) -> bool {
        self.inner.router.is_some()
    }

    /// The address of the server in use (of the balancer connected to, with several).
    pub fn addr(&self) -> &str {
        let inner = &self.inner;
        &inner.addrs[inner.current.load(Ordering::Relaxed) % inner.addrs.len()]
    }

    /// Every address this client may use.
    pub fn addrs(&self) -> &[String] {
        &self.inner.addrs
    }

    /// The server at `failed` did not answer: use the next one (unless another call has
    /// moved on already).
    fn move_on(&self, failed: &str) {
        let inner = &self.inner;
        if inner.addrs.len() < 2 {
            return;
        }
        let at = inner.current.load(Ordering::Relaxed) % inner.addrs.len();
        if inner.addrs[at] == failed {
            let next = (at + 1) % inner.addrs.len();
            let _ = inner.current.compare_exchange(at, next, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The random id this client stamps on its writes (non-zero).
    pub fn client_id(&self) -> u64 {
        self.inner.client_id
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    async fn connection_unless_direct(&self) -> Result<Option<Arc<Connection>>, ClientError> {
        match self.inner.router {
            Some(_) => Ok(None),
            None => self.connection().await.map(Some),
        }
    }

    /// The open connection, or a new one if there is none or it broke.
    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let open = || self.inner.conn.lock().expect("connection lock").clone().filter(|c| !c.is_closed());
        if let Some(conn) = open() {
            return Ok(conn);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(conn) = open() {
            return Ok(conn);
        }
        let c = &self.inner.config;
        // Each address at most once; a request that is refused connection everywhere fails.
        let outgoing = c.outgoing();
        let mut last = None;
        for _ in 0..self.inner.addrs.len() {
            let addr = self.addr().to_owned();
            let open = Connection::open(&addr, c.connect_timeout, c.max_payload, c.max_in_flight, &outgoing);
            match open.await {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    *self.inner.conn.lock().expect("connection lock") = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) => {
                    self.move_on(&addr);
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one address"))
    }

    /// Sends any request and returns the server's answer; an `Error` answer becomes
    /// [`ClientError::Server`]. Requests other than init, add and rm are sent again after
    /// a broken connection or a timeout, up to [`ClientConfig::retries`] times.
    pub async fn request(&self, request: &Request) -> Result<Response, ClientError> {
        let frame = request.to_frame(0).map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let c = &self.inner.config;
        let (timeout, tries) = if request.is_admin() { (c.admin_timeout, 1) } else { (c.timeout, c.retries + 1) };
        let mut backoff = Duration::from_millis(50);
        let mut last = None;
        for attempt in 0..tries {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let addr = self.addr().to_owned();
            let answer = match (&self.inner.router, self.connection_unless_direct().await) {
                // The router bounds every call by its own deadline (the same `timeout`):
                // no timer per request here.
                (Some(router), _) => Ok(router.call(frame.clone()).await),
                (None, Ok(Some(conn))) => {
                    let answer = conn.call(frame.clone(), timeout).await;
                    if self.inner.addrs.len() > 1 && answer.as_ref().is_err_and(ClientError::is_transport) {
                        // That balancer failed: the next attempt (if any) goes to another,
                        // on a new connection.
                        self.move_on(&addr);
                        let mut cached = self.inner.conn.lock().expect("connection lock");
                        if cached.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                            *cached = None;
                        }
                    }
                    answer
                }
                (None, Ok(None)) => unreachable!("a client without a router has a connection"),
                (None, Err(e)) => Err(e),
            };
            match answer {
                Ok(answer) => {
                    return match Response::from_frame(&answer) {
                        Ok(Response::Error(code)) => Err(ClientError::Server(code)),
                        Ok(response) => Ok(response),
                        Err(e) => Err(ClientError::Protocol(e.to_string())),
                    }
                }
                Err(e) if e.is_transport() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Inserts a batch of rows. The balancer splits it by shard; each shard's part is
    /// atomic. A key that exists already, a key outside every shard or a row that does not
    /// fit the schema fails the write.
    pub async fn write(&self, rows: &[Row]) -> Result<WriteResult, ClientError> {
        if rows.is_empty() {
            return Err(ClientError::InvalidRequest("a write needs at least one row".into()));
        }
        let batch = WriteBatch::encode(self.client_id(), self.next_seq(), rows)
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        self.committed(self.request(&Request::Write(batch)).await?)
    }

    /// Every row a server holds, grouped by shard.
    pub async fn read_server(&self, name: &str) -> Result<Vec<ShardRows>, ClientError> {
        let request = Request::ReadServer { server: name.to_owned() };
        match self.request(&request).await? {
            Response::ServerRows(shards) => Ok(shards),
            other => Err(unexpected("ServerRows", &other)),
        }
    }

    /// Replaces the row with `row.key` (which must exist).
    pub async fn update(&self, row: Row) -> Result<WriteResult, ClientError> {
        let request = Request::Update { client_id: self.client_id(), seq: self.next_seq(), row };
        self.committed(self.request(&request).await?)
    }

    /// Deletes the row with `key` (which must exist) from every replica.
    pub async fn delete(&self, key: i64) -> Result<WriteResult, ClientError> {
        let request = Request::Delete { client_id: self.client_id(), seq: self.next_seq(), key };
        self.committed(self.request(&request).await?)
    }

    /// The cluster: schema, shards with their primaries and replicas, servers and health.
    pub async fn status(&self) -> Result<Topology, ClientError> {
        topology(self.request(&Request::Status).await?)
    }

    /// Creates the cluster (the seed's `/init`); answers the new topology.
    pub async fn init(&self, request: InitRequest) -> Result<Topology, ClientError> {
        topology(self.request(&Request::Init(request)).await?)
    }

    /// Adds servers and shards (the seed's `/add`); answers the new topology.
    pub async fn add_servers(&self, request: AddServersRequest) -> Result<Topology, ClientError> {
        topology(self.request(&Request::AddServers(request)).await?)
    }

    /// Removes `n` servers, the named ones first (the seed's `/rm`).
    pub async fn remove_servers(&self, n: usize, names: &[String]) -> Result<Topology, ClientError> {
        let request = Request::RemoveServers { n, servers: names.to_vec() };
        topology(self.request(&request).await?)
    }

    /// Moves `shard`'s primary to `to` (or the most caught-up other replica) on purpose: a
    /// planned switchover that clients ride through without errors; answers the new topology.
    pub async fn failover(&self, shard: ShardId, to: Option<&str>) -> Result<Topology, ClientError> {
        topology(self.request(&Request::Failover { shard, to: to.map(str::to_owned) }).await?)
    }

    /// Checks the server answers; returns the round trip time.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let started = Instant::now();
        match self.request(&Request::Ping).await? {
            Response::Pong => Ok(started.elapsed()),
            other => Err(unexpected("Pong", &other)),
        }
    }

    /// The server's counters, as name/value pairs in a stable order.
    pub async fn stats(&self) -> Result<Vec<(String, String)>, ClientError> {
        match self.request(&Request::Stats).await? {
            Response::Stats(pairs) => Ok(pairs),
            other => Err(unexpected("Stats", &other)),
        }
    }
}

impl Client {
    /// A write's answer, its commits taken into the session token.
    fn committed(&self, response: Response) -> Result<WriteResult, ClientError> {
        match response {
            Response::Committed(commits) => {
                let mut session = self.inner.session.lock().expect("session lock");
                for c in &commits {
                    session.observe(ShardPosition { shard: c.shard, term: c.term, index: c.index });
                }
                Ok(WriteResult { commits })
            }
            other => Err(unexpected("Committed", &other)),
        }
    }
}

fn topology(response: Response) -> Result<Topology, ClientError> {
    match response {
        Response::Topology(t) => Ok(t),
        other => Err(unexpected("Topology", &other)),
    }
}

/// A protocol error for an answer of the wrong kind.
pub(crate) fn unexpected(want: &str, got: &Response) -> ClientError {
    let got = format!("{got:?}");
    let got: String = got.chars().take(120).collect();
    ClientError::Protocol(format!("expected a {want} answer, got {got}"))
}
