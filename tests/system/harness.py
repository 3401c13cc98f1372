"""Starts the real evbus binaries on free loopback ports and talks HTTP to them.

Every service is started with port 0 and reports the port it bound in its
"listening" log line; logs go to files in the test's temporary directory so a
test can read them (correlation ids) and the harness can check them for
sanitizer reports when the service stops.
"""
import atexit
import base64
import http.client
import json
import os
import signal
import subprocess
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("EVBUS_BIN_DIR", os.path.join(ROOT, "build-asan"))
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def wait_until(predicate, timeout=10.0, interval=0.01, what="condition"):
    """Polls predicate until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def request(port, method, path, body=None, headers=None, timeout=30.0, raw=None):
    """One HTTP request on a fresh connection; body is JSON-encoded unless raw bytes given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    hdrs = dict(PORT_HEADERS.get(port, {}))  # an eventbus's admin key, unless given
    hdrs.update(headers or {})
    data = raw
    if body is not None and raw is None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


_started = []
PORT_HEADERS = {}  # port -> headers every request() to it carries by default
BUS_KEYS = {}  # EVENTBUS_DB -> the admin key made for that database


def create_key(db, *args):
    """A new eventbus API key made with `eventbus keys create` on database db."""
    r = subprocess.run([os.path.join(BIN_DIR, "eventbus"), "keys", "create", *args],
                       env=dict(os.environ, EVENTBUS_DB=db), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@atexit.register
def _kill_leftovers():
    """Whatever a failed test left running is stopped when the test process ends."""
    for proc in _started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Service:
    """One running binary with its log file."""

    def __init__(self, name, binary, workdir, env):
        self.name = name
        self.binary = binary
        self.workdir = workdir
        self.env = env
        self.proc = None
        self.port = None
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.starts = 0
        self.headers = {}  # sent with every get/post/patch/delete unless given

    def start(self, port=0, timeout=20.0):
        env = dict(os.environ)
        env.update(self.env)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        log = open(self.log_path, "ab")
        self.offset = log.tell()
        self.proc = subprocess.Popen([os.path.join(BIN_DIR, self.binary), f"--port={port}"],
                                     cwd=self.workdir, env=env, stdout=log, stderr=log)
        log.close()
        _started.append(self.proc)
        self.starts += 1

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            for line in self.lines(since_start=True):
                if line.get("msg") == "listening":
                    return int(line["port"])
            return None

        if self.binary == "eventbus" and self.env.get("EVENTBUS_DB") in BUS_KEYS and not self.headers:
            self.headers = {"Authorization": f"Bearer {BUS_KEYS[self.env['EVENTBUS_DB']]}"}
        try:
            self.port = wait_until(listening, timeout, what=f"{self.name} to listen")
            if self.binary == "eventbus" and self.headers:
                PORT_HEADERS[self.port] = self.headers
        except AssertionError:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            raise
        return self

    def lines(self, since_start=False):
        """The service's JSON log lines (non-JSON lines, e.g. sanitizer output, skipped)."""
        out = []
        with open(self.log_path, "rb") as f:
            if since_start:
                f.seek(self.offset)
            for raw in f:
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    pass
        return out

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def check_sanitizers(self):
        text = self.log_text()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"{self.name} sanitizer report:\n{self.log_tail(80)}"

    def stop(self, timeout=20.0):
        """SIGTERM and a clean exit (code 0, no sanitizer report) are both required."""
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop on SIGTERM:\n{self.log_tail()}")
        self.check_sanitizers()
        assert code == 0, f"{self.name} exited with {code}:\n{self.log_tail()}"

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self):
        """Starts again on the same port."""
        return self.start(port=self.port)

    def _kw(self, kw):
        if self.headers:
            kw["headers"] = dict(self.headers, **(kw.get("headers") or {}))
        return kw

    def get(self, path, **kw):
        return request(self.port, "GET", path, **self._kw(kw))

    def post(self, path, body=None, **kw):
        return request(self.port, "POST", path, body=body, **self._kw(kw))

    def delete(self, path, **kw):
        return request(self.port, "DELETE", path, **self._kw(kw))

    def patch(self, path, body=None, **kw):
        return request(self.port, "PATCH", path, body=body, **self._kw(kw))

    def put(self, path, body=None, **kw):
        return request(self.port, "PUT", path, body=body, **self._kw(kw))


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, on a free loopback port.

    initdb and the server run as the 'postgres' user when the tests run as root
    (PostgreSQL refuses to run as root)."""

    def __init__(self, workdir):
        bins = sorted(d for d in os.listdir("/usr/lib/postgresql") if d.isdigit())
        self.bin = f"/usr/lib/postgresql/{bins[-1]}/bin"
        self.dir = workdir
        self.data = os.path.join(workdir, "data")
        self.port = free_port()
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres", workdir], check=True)
        subprocess.run(self.as_pg + [f"{self.bin}/initdb", "-D", self.data, "-U", "evbus", "-A", "trust",
                                     "--no-sync", "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{workdir}'\nmax_connections = 300\n"
                    "fsync = on\nsynchronous_commit = on\n")
        self.n = 0

    def start(self):
        subprocess.run(self.as_pg + [f"{self.bin}/pg_ctl", "-D", self.data, "-l",
                                     os.path.join(self.dir, "server.log"), "-w", "-t", "60", "start"],
                       check=True, stdout=subprocess.DEVNULL)

    def stop(self, mode="immediate"):
        subprocess.run(self.as_pg + [f"{self.bin}/pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"],
                       check=True, stdout=subprocess.DEVNULL)

    def url(self, db):
        return f"postgresql://evbus@127.0.0.1:{self.port}/{db}"

    def psql(self, db, sql):
        r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", self.url(db),
                            "-c", sql], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def create_db(self, prefix):
        self.n += 1
        name = f"{prefix}_{os.getpid()}_{self.n}"
        self.psql("postgres", f"CREATE DATABASE {name}")
        return name


class KafkaBroker:
    """A single-node Apache Kafka broker (KRaft) in a temporary directory, on free loopback
    ports, run with the machine's Java from the jars scripts/kafka-fetch.sh caches."""

    def __init__(self, workdir):
        self.libs = subprocess.run([os.path.join(ROOT, "scripts", "kafka-fetch.sh")], capture_output=True,
                                   text=True, check=True).stdout.strip().splitlines()[-1]
        self.dir = workdir
        self.port, self.cport = free_port(), free_port()
        self.conf = os.path.join(workdir, "server.properties")
        with open(self.conf, "w") as f:
            f.write(f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{self.cport}
listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={workdir}/logs
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
num.partitions=3
""")
        import base64
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self.java("kafka.tools.StorageTool", "format", "-t", cluster, "-c", self.conf, check=True)
        self.proc = None

    def java(self, main, *args, check=False):
        return subprocess.run(["java", "-Xmx256m", "-cp", f"{self.libs}/*", main, *args],
                              capture_output=True, text=True, check=check, timeout=120)

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=90):
        log = open(os.path.join(self.dir, "broker.log"), "ab")
        self.proc = subprocess.Popen(["java", "-Xmx512m", "-Xms256m", "-cp", f"{self.libs}/*", "kafka.Kafka",
                                      self.conf], stdout=log, stderr=log)
        log.close()
        _started.append(self.proc)

        def ready():
            assert self.proc.poll() is None, "the Kafka broker exited"
            r = subprocess.run(["kcat", "-b", self.bootstrap, "-L", "-m", "2"], capture_output=True, text=True)
            return r.returncode == 0 and "1 brokers" in r.stdout

        wait_until(ready, timeout, 0.5, "the Kafka broker to answer")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill9()

    def messages(self, topic):
        """Every message of a topic, as (key, value) pairs, read with kcat (not our code)."""
        r = subprocess.run(["kcat", "-b", self.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
                            "-f", "%k\t%s\n"], capture_output=True, text=True, timeout=120)
        if "Unknown topic" in r.stderr:
            return []
        assert r.returncode == 0, r.stderr
        return [tuple(line.split("\t", 1)) for line in r.stdout.splitlines() if line]


PG = None  # set by conftest when the suite runs on PostgreSQL
KAFKA = None  # set by conftest when the eventbus relays to Kafka


def _typed(v):
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        return v


class Stack:
    """eventbus + auth-service + user-service in one temporary directory, each with its
    own database: SQLite files there, or fresh databases on the PostgreSQL cluster."""

    def __init__(self, workdir, users=True, auth=True, env=None, prepare=None):
        """env: extra variables per service name; prepare(stack) runs after the databases
        exist and before any service starts (to lay down an older schema, say)."""
        self.workdir = workdir
        env = env or {}
        self.db = {}
        for name in ("eventbus", "auth", "users"):
            if PG:
                self.db[name] = PG.url(PG.create_db(name))
            else:
                self.db[name] = os.path.join(workdir, f"{name}.db")
        if prepare:
            prepare(self)
        bus_env = dict(EVENTBUS_DB=self.db["eventbus"], EVENTBUS_PUSH_ALLOW="127.0.0.1/32")
        # one Kafka broker serves the whole session: each stack gets topics of its own
        self.topic_prefix = f"t{uuid.uuid4().hex[:8]}." if KAFKA else ""
        if KAFKA:
            bus_env.update(EVENTBUS_BROKER=f"kafka://{KAFKA.bootstrap}",
                           EVENTBUS_KAFKA_TOPIC_PREFIX=self.topic_prefix,
                           EVENTBUS_KAFKA_SESSION_TIMEOUT_MS="6000")
        bus_env.update(env.get("eventbus", {}))
        self.bus_env = bus_env  # for more eventbus instances on the same data
        # keys as an operator makes them: an admin key (the tests' default on the eventbus),
        # auth-service's (User* events from /auth-service) and user-service's (its own
        # subscriptions)
        self.keys = {}
        if bus_env.get("EVENTBUS_AUTH", "keys") == "keys":
            db = bus_env["EVENTBUS_DB"]
            self.keys = {"admin": create_key(db, "--name", "tests", "--admin"),
                         "auth": create_key(db, "--name", "auth-service", "--types", "User*",
                                            "--sources", "/auth-service"),
                         "users": create_key(db, "--name", "user-service", "--subscriptions", "user-service*")}
            BUS_KEYS[db] = self.keys["admin"]
        self.eventbus = Service("eventbus", "eventbus", workdir, bus_env)
        self.eventbus.start()
        bus = f"http://127.0.0.1:{self.eventbus.port}"
        self.auth = Service("auth", "auth-service", workdir,
                            dict(AUTH_DB=self.db["auth"], AUTH_EVENTBUS_URL=bus,
                                 AUTH_EVENTBUS_KEY=self.keys.get("auth", ""), **env.get("auth", {})))
        self.webhook_secret = new_webhook_secret()
        self.jwt_key = base64.b64encode(os.urandom(32)).decode()
        self.auth.env.setdefault("AUTH_JWT_KEY", self.jwt_key)
        self.users = Service("users", "user-service", workdir,
                             dict(USERS_DB=self.db["users"], USERS_EVENTBUS_URL=bus, USERS_POLL_WAIT_S="5",
                                  USERS_WEBHOOK_SECRET=self.webhook_secret, USERS_JWT_KEY=self.jwt_key,
                                  USERS_EVENTBUS_KEY=self.keys.get("users", ""), **env.get("users", {})))
        self.users.headers = {"Authorization": f"Bearer {self.token(str(uuid.uuid4()), 'admin')}"}
        self.services = [self.eventbus]
        try:
            if auth:
                self.auth.start()
                self.services.append(self.auth)
            if users:
                self.users.start()
                self.services.append(self.users)
        except AssertionError:
            for s in self.services:
                if s.proc.poll() is None:
                    s.kill9()
            raise

    def token(self, sub, role="user", ttl=600, **override):
        """An access token as auth-service makes them, minted here with the shared key."""
        return make_jwt(self.jwt_key, dict({"iss": "evbus-auth", "aud": "evbus", "sub": sub, "role": role,
                                            "iat": int(time.time()), "exp": int(time.time()) + ttl}, **override))

    def kafka_messages(self, topic):
        """The messages of one of this stack's topics in Kafka, read with kcat."""
        return KAFKA.messages(self.topic_prefix + topic)

    def stop(self):
        errors = []
        for s in reversed(self.services):
            try:
                s.stop()
            except AssertionError as e:
                errors.append(str(e))
        assert not errors, "\n".join(errors)

    def register(self, email=None, password="correct horse battery", name="Ada Lovelace",
                 correlation=None):
        headers = {"X-Correlation-ID": correlation} if correlation else {}
        body = {"email": email or f"u{uuid.uuid4().hex[:12]}@example.com", "password": password,
                "displayName": name}
        return self.auth.post("/api/auth/register", body, headers=headers)

    def execute(self, name, sql):
        """Runs SQL (several statements allowed) on one service's database."""
        if PG:
            PG.psql(self.db[name].rsplit("/", 1)[1], sql)
            return
        import sqlite3
        con = sqlite3.connect(self.db[name], timeout=10)
        try:
            con.executescript(sql)
        finally:
            con.close()

    def rows(self, name, sql):
        """Rows of a query on one service's database, as tuples (numbers as int)."""
        if PG:
            out = PG.psql(self.db[name].rsplit("/", 1)[1], sql)
            return [tuple(_typed(v) for v in line.split("\t")) for line in out.splitlines()]
        return sqlite_rows(self.db[name], sql)

    def count(self, name, sql):
        return self.rows(name, sql)[0][0]

    def wait_profile(self, user_id, timeout=20.0):
        def ready():
            r = self.users.get(f"/api/users/{user_id}")
            return r.json if r.status == 200 else None

        return wait_until(ready, timeout, what=f"profile {user_id}")


class PublishLoad:
    """Threads that publish one new event per request until stopped, recording each
    outcome: accepted ids (2xx), refused responses (any other status) and transport
    errors. A thread whose request fails to connect ends when end_on_error is set."""

    def __init__(self, port, threads=4, timeout=10, end_on_error=False, event_type="OrderPlaced"):
        import threading
        self.accepted, self.refused, self.errors = [], [], []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._args = (port, timeout, end_on_error, event_type)
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self):
        port, timeout, end_on_error, event_type = self._args
        while not self._stop.is_set():
            ev = make_event(event_type, subject="k")
            try:
                r = request(port, "POST", "/api/events/publish", ev,
                            headers={"Content-Type": "application/cloudevents+json"}, timeout=timeout)
            except OSError as e:
                with self._lock:
                    self.errors.append(str(e))
                if end_on_error:
                    return
                continue
            with self._lock:
                if r.status in (200, 201):
                    self.accepted.append(ev["id"])
                else:
                    self.refused.append(r)

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join()

    def count(self, what):
        with self._lock:
            return len(getattr(self, what))


def new_webhook_secret():
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(key_b64, claims, header=None, key=None):
    """A JWT signed with HS256 (or unsigned when header says alg none), for tests."""
    import hashlib
    import hmac
    header = header or {"alg": "HS256", "typ": "JWT"}
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    if header.get("alg") == "none":
        return signing + "."
    k = key if key is not None else base64.b64decode(key_b64)
    return signing + "." + b64url(hmac.new(k, signing.encode(), hashlib.sha256).digest())


def make_event(event_type="UserRegistered", subject=None, data=None, **extra):
    ev = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/tests", "type": event_type,
          "datacontenttype": "application/json", "data": data if data is not None else {"n": 1}}
    if subject:
        ev["subject"] = subject
    ev.update(extra)
    return ev


def sqlite_rows(path, sql, args=()):
    import sqlite3
    con = sqlite3.connect(path, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()
