/*  auth.c - CURVE for zexec: strict certificate parsing, socket setup, and a
    ZAP handler (RFC 27) that keeps one allowlist per ZAP domain, so a client
    key cannot register as a worker and the reverse. See zx_auth.h for the
    fail-closed rules and docs/security.md for the model.
*/
#include "zx_auth.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93 /* libzmq 4.3 draft option, present in the 4.3.4 library */
#endif

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

/* ---- certificate files -------------------------------------------------------- */

static bool s_z85_key(const char *txt, uint8_t out[32])
{
    if (!txt || strlen(txt) != 40) {
        return false;
    }
    return zmq_z85_decode(out, txt) != NULL;
}

zcert_t *zx__auth_cert_parse(const char *text, size_t len, bool need_secret, char *err,
                             size_t errlen)
{
    if (!text || len == 0 || len > ZX__AUTH_CERT_MAX) {
        snprintf(err, errlen, "certificate is empty or larger than %d bytes", ZX__AUTH_CERT_MAX);
        return NULL;
    }
    if (memchr(text, 0, len)) {
        snprintf(err, errlen, "certificate holds a NUL byte");
        return NULL;
    }
    char *copy = malloc(len + 1);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(copy, text, len);
    copy[len] = 0;
    zconfig_t *cfg = zconfig_str_load(copy);
    free(copy);
    if (!cfg) {
        snprintf(err, errlen, "not a ZPL certificate file");
        return NULL;
    }
    uint8_t pub[32], sec[32] = {0};
    zcert_t *cert = NULL;
    if (!s_z85_key(zconfig_get(cfg, "curve/public-key", NULL), pub)) {
        snprintf(err, errlen, "no valid curve/public-key (40 Z85 characters)");
    } else if (need_secret && !s_z85_key(zconfig_get(cfg, "curve/secret-key", NULL), sec)) {
        snprintf(err, errlen, "no valid curve/secret-key: is this the _secret file?");
    } else {
        if (need_secret) {
            /* the pair must belong together: derive the public half */
            char sec_txt[41], derived[41], pub_txt[41];
            zmq_z85_encode(sec_txt, sec, 32);
            zmq_z85_encode(pub_txt, pub, 32);
            if (zmq_curve_public(derived, sec_txt) != 0 || strcmp(derived, pub_txt) != 0) {
                snprintf(err, errlen, "secret-key does not match public-key");
                zconfig_destroy(&cfg);
                return NULL;
            }
        }
        cert = zcert_new_from(pub, sec);
        if (!cert) {
            snprintf(err, errlen, "out of memory");
        }
    }
    zconfig_destroy(&cfg);
    return cert;
}

zcert_t *zx__auth_cert_load(const char *path, bool need_secret, char *err, size_t errlen)
{
    char why[160] = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        st.st_size > ZX__AUTH_CERT_MAX) {
        snprintf(err, errlen, "%s: not a regular file of 1..%d bytes", path, ZX__AUTH_CERT_MAX);
        close(fd);
        return NULL;
    }
    size_t len = (size_t)st.st_size;
    char *buf = malloc(len);
    size_t got = 0;
    while (buf && got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    if (!buf || got != len) {
        snprintf(err, errlen, "%s: could not read", path);
        free(buf);
        return NULL;
    }
    zcert_t *cert = zx__auth_cert_parse(buf, len, need_secret, why, sizeof why);
    free(buf);
    if (!cert) {
        snprintf(err, errlen, "%s: %s", path, why);
        return NULL;
    }
    if (need_secret && (st.st_mode & 077)) {
        zsys_warning("zexec: secret key %s may be read by group or others (mode %03o)", path,
                     (unsigned)(st.st_mode & 0777));
    }
    return cert;
}

int zx__auth_keygen(const char *dir, const char *name, char *err, size_t errlen)
{
    if (!name || !*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
        strlen(name) > 200) {
        snprintf(err, errlen, "bad key name '%s'", name ? name : "");
        return -1;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    char pub_path[4096], sec_path[4096];
    snprintf(pub_path, sizeof pub_path, "%s/%s", dir, name);
    snprintf(sec_path, sizeof sec_path, "%s/%s_secret", dir, name);
    if (access(pub_path, F_OK) == 0 || access(sec_path, F_OK) == 0) {
        snprintf(err, errlen, "%s or its _secret file exists already; not overwriting", pub_path);
        return -1;
    }
    zcert_t *cert = zcert_new();
    if (!cert) {
        snprintf(err, errlen, "could not make a key pair (libzmq without CURVE?)");
        return -1;
    }
    zcert_set_meta(cert, "name", "%s", name);
    zcert_set_meta(cert, "created-by", "zexec keygen");
    /* the secret file is created 0600 before anything is written into it */
    mode_t old = umask(077);
    int rc = zcert_save_secret(cert, sec_path);
    umask(old);
    if (rc == 0) {
        rc = zcert_save_public(cert, pub_path);
    }
    if (rc == 0) {
        chmod(sec_path, 0600);
        chmod(pub_path, 0644);
    } else {
        snprintf(err, errlen, "could not write %s: %s", pub_path, strerror(errno));
        unlink(sec_path);
        unlink(pub_path);
    }
    zcert_destroy(&cert);
    return rc == 0 ? 0 : -1;
}

/* ---- sockets -------------------------------------------------------------------- */

int zx__auth_server_setup(zsock_t *sock, zcert_t *server_cert, const char *domain)
{
    if (!sock || !server_cert || !domain) {
        return -1;
    }
    zcert_apply(server_cert, sock);
    zsock_set_curve_server(sock, 1);
    zsock_set_zap_domain(sock, domain);
    int one = 1;
    if (zmq_setsockopt(zsock_resolve(sock), ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one) != 0) {
        /* without it a missing ZAP handler would admit everyone: refuse to run */
        zsys_error("zexec: this libzmq lacks ZMQ_ZAP_ENFORCE_DOMAIN (%s); CURVE cannot fail "
                   "closed",
                   zmq_strerror(errno));
        return -1;
    }
    return 0;
}

int zx__auth_client_setup(zsock_t *sock, const char *key_file, const char *server_key_file)
{
    char err[512];
    if (!key_file || !server_key_file) {
        zsys_error("zexec: CURVE needs both --key (our secret certificate) and --server-key "
                   "(the broker's public certificate)");
        return -1;
    }
    zcert_t *mine = zx__auth_cert_load(key_file, true, err, sizeof err);
    if (!mine) {
        zsys_error("zexec: --key %s", err);
        return -1;
    }
    zcert_t *server = zx__auth_cert_load(server_key_file, false, err, sizeof err);
    if (!server) {
        zsys_error("zexec: --server-key %s", err);
        zcert_destroy(&mine);
        return -1;
    }
    zcert_apply(mine, sock);
    zsock_set_curve_serverkey(sock, zcert_public_txt(server));
    zcert_destroy(&mine);
    zcert_destroy(&server);
    return 0;
}

/* ---- the ZAP handler -------------------------------------------------------------- */

typedef struct {
    const char *name;
    char *dir;
    zhashx_t *keys; /* Z85 public key -> file name; NULL while broken */
    struct timespec mtime;
    bool loaded;
    bool fixed;       /* keys given at start, no folder (the peer domain) */
    atomic_int count; /* read by zx__auth_keys from other threads */
} s_domain_t;

struct zx__auth {
    zactor_t *actor;
    zsock_t *zap;      /* bound by zx__auth_new, then used only by the actor */
    s_domain_t dom[3]; /* clients, workers, peer */
    atomic_uint_fast64_t admitted, refused;
};

/* Reads every file of d->dir; any bad file makes the whole domain refuse. */
static void s_domain_load(s_domain_t *d)
{
    zhashx_destroy(&d->keys);
    atomic_store(&d->count, -1);
    d->loaded = true;
    memset(&d->mtime, 0, sizeof d->mtime);
    if (!d->dir) {
        zsys_error("zexec auth: no key folder for domain '%s': every %s is refused", d->name,
                   d->name);
        return;
    }
    struct stat st;
    if (stat(d->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        zsys_error("zexec auth: key folder %s for '%s' is missing: every peer is refused", d->dir,
                   d->name);
        return;
    }
    d->mtime = st.st_mtim;
    DIR *dh = opendir(d->dir);
    if (!dh) {
        zsys_error("zexec auth: cannot read %s (%s): every '%s' peer is refused", d->dir,
                   strerror(errno), d->name);
        return;
    }
    zhashx_t *keys = zhashx_new();
    zhashx_set_destructor(keys, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_duplicator(keys, (zhashx_duplicator_fn *)strdup);
    bool bad = false;
    struct dirent *e;
    while (!bad && (e = readdir(dh))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char path[4096], err[512];
        snprintf(path, sizeof path, "%s/%s", d->dir, e->d_name);
        struct stat fst;
        if (stat(path, &fst) != 0 || S_ISDIR(fst.st_mode)) {
            continue;
        }
        zcert_t *c = zx__auth_cert_load(path, false, err, sizeof err);
        if (!c) {
            zsys_error("zexec auth: bad key file in '%s' folder: %s: every '%s' peer is "
                       "refused until it is fixed",
                       d->name, err, d->name);
            bad = true;
            break;
        }
        zhashx_update(keys, zcert_public_txt(c), e->d_name);
        zcert_destroy(&c);
    }
    closedir(dh);
    if (bad) {
        zhashx_destroy(&keys);
        return;
    }
    if (zhashx_size(keys) == 0) {
        zsys_error("zexec auth: key folder %s for '%s' is empty: every peer is refused", d->dir,
                   d->name);
    } else {
        zsys_info("zexec auth: %zu %s key(s) admitted from %s", zhashx_size(keys), d->name, d->dir);
    }
    d->keys = keys;
    atomic_store(&d->count, (int)zhashx_size(keys));
}

/* Re-reads the folder when it changed (or vanished) since the last load. */
static void s_domain_refresh(s_domain_t *d)
{
    if (d->fixed) {
        return;
    }
    struct stat st;
    bool exists = d->dir && stat(d->dir, &st) == 0;
    if (!d->loaded ||
        (exists &&
         (st.st_mtim.tv_sec != d->mtime.tv_sec || st.st_mtim.tv_nsec != d->mtime.tv_nsec)) ||
        (!exists && d->keys)) {
        s_domain_load(d);
    }
}

static void s_zap_reply(zsock_t *zap, zframe_t *request_id, const char *code, const char *text,
                        const char *user)
{
    zmsg_t *r = zmsg_new();
    zmsg_addstr(r, "1.0");
    if (request_id) {
        zmsg_append(r, &request_id);
    } else {
        zmsg_addstr(r, "");
    }
    zmsg_addstr(r, code);
    zmsg_addstr(r, text);
    zmsg_addstr(r, user ? user : "");
    zmsg_addmem(r, NULL, 0); /* no metadata */
    zmsg_send(&r, zap);
}

static bool s_frame_is(zframe_t *f, const char *s)
{
    return f && zframe_size(f) == strlen(s) && memcmp(zframe_data(f), s, strlen(s)) == 0;
}

static void s_zap_request(zx__auth_t *self, zmsg_t *req)
{
    /* version, request id, domain, address, routing id, mechanism, credentials */
    zframe_t *version = zmsg_pop(req);
    zframe_t *request_id = zmsg_pop(req);
    zframe_t *domain = zmsg_pop(req);
    zframe_t *address = zmsg_pop(req);
    zframe_t *identity = zmsg_pop(req);
    zframe_t *mechanism = zmsg_pop(req);
    zframe_t *key = zmsg_pop(req);
    const char *code = "400", *text = "refused";
    char user[256] = "";
    s_domain_t *d = NULL;
    for (int i = 0; i < 3; i++) {
        if (s_frame_is(domain, self->dom[i].name)) {
            d = &self->dom[i];
        }
    }
    if (!s_frame_is(version, "1.0") || !request_id) {
        text = "bad ZAP request";
    } else if (!d) {
        text = "unknown ZAP domain";
    } else if (!s_frame_is(mechanism, "CURVE") || !key || zframe_size(key) != 32 ||
               zmsg_size(req) != 0) {
        text = "CURVE required";
    } else {
        s_domain_refresh(d);
        char txt[41];
        zmq_z85_encode(txt, zframe_data(key), 32);
        const char *name = d->keys ? zhashx_lookup(d->keys, txt) : NULL;
        if (name) {
            code = "200";
            text = "OK";
            snprintf(user, sizeof user, "%s", name);
        } else {
            text = d->keys ? "key not allowed on this endpoint" : "allowlist unusable";
        }
    }
    if (strcmp(code, "200") == 0) {
        atomic_fetch_add(&self->admitted, 1);
    } else {
        uint64_t n = atomic_fetch_add(&self->refused, 1) + 1;
        /* a flood of refused handshakes costs a counter, not a log line each */
        if (n <= 20 || n % 1000 == 0) {
            char addr[64] = "?";
            if (address) {
                snprintf(addr, sizeof addr, "%.*s", (int)zframe_size(address),
                         (char *)zframe_data(address));
            }
            zsys_warning("zexec auth: refused a peer from %s on '%s': %s (%llu refused so far)",
                         addr, d ? d->name : "?", text, (unsigned long long)n);
        }
    }
    s_zap_reply(self->zap, request_id, code, text, user);
    zframe_destroy(&version);
    zframe_destroy(&domain);
    zframe_destroy(&address);
    zframe_destroy(&identity);
    zframe_destroy(&mechanism);
    zframe_destroy(&key);
}

static void s_zap_actor(zsock_t *pipe, void *arg)
{
    zx__auth_t *self = arg;
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, self->zap, NULL);
    while (true) {
        void *which = zpoller_wait(poller, -1);
        if (which == pipe || zpoller_terminated(poller)) {
            break; /* $TERM or interrupted: stop answering */
        }
        if (which == self->zap) {
            zmsg_t *req = zmsg_recv(self->zap);
            if (req) {
                s_zap_request(self, req);
                zmsg_destroy(&req);
            }
        }
    }
    zpoller_destroy(&poller);
    /* unbinding the endpoint makes ZMQ_ZAP_ENFORCE_DOMAIN sockets refuse; an
       explicit unbind frees the name at once (closing frees it later, on
       libzmq's reaper thread), so a new handler can bind it */
    zsock_unbind(self->zap, "%s", ZAP_ENDPOINT);
    zsock_destroy(&self->zap);
}

zx__auth_t *zx__auth_new(const char *client_keys_dir, const char *worker_keys_dir,
                         const char *peer_key)
{
    zx__auth_t *self = calloc(1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->dom[0].name = ZX__AUTH_DOMAIN_CLIENTS;
    self->dom[1].name = ZX__AUTH_DOMAIN_WORKERS;
    self->dom[0].dir = client_keys_dir ? strdup(client_keys_dir) : NULL;
    self->dom[1].dir = worker_keys_dir ? strdup(worker_keys_dir) : NULL;
    for (int i = 0; i < 2; i++) {
        atomic_init(&self->dom[i].count, -1);
        s_domain_load(&self->dom[i]);
    }
    /* the peer domain: one key, fixed at start (no folder to watch); set
       before the actor starts, read only by it afterwards */
    s_domain_t *pd = &self->dom[2];
    pd->name = ZX__AUTH_DOMAIN_PEER;
    pd->fixed = true;
    pd->loaded = true;
    atomic_init(&pd->count, -1);
    uint8_t raw[32];
    if (peer_key && s_z85_key(peer_key, raw)) {
        pd->keys = zhashx_new();
        zhashx_set_destructor(pd->keys, (zhashx_destructor_fn *)zstr_free);
        zhashx_set_duplicator(pd->keys, (zhashx_duplicator_fn *)strdup);
        zhashx_update(pd->keys, peer_key, "peer");
        atomic_store(&pd->count, 1);
    } else if (peer_key) {
        zsys_error("zexec auth: the peer key is not 40 Z85 characters: every peer is refused");
    }
    atomic_init(&self->admitted, 0);
    atomic_init(&self->refused, 0);
    self->zap = zsock_new(ZMQ_REP);
    if (!self->zap || zsock_bind(self->zap, ZAP_ENDPOINT) != 0) {
        zsys_error("zexec auth: cannot bind %s (another ZAP handler in this process?)",
                   ZAP_ENDPOINT);
        zx__auth_destroy(&self);
        return NULL;
    }
    self->actor = zactor_new(s_zap_actor, self);
    if (!self->actor) {
        zx__auth_destroy(&self);
        return NULL;
    }
    return self;
}

void zx__auth_destroy(zx__auth_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zx__auth_t *self = *self_p;
    zactor_destroy(&self->actor); /* the actor closes the ZAP socket */
    zsock_destroy(&self->zap);    /* only if the actor never started */
    for (int i = 0; i < 3; i++) {
        zhashx_destroy(&self->dom[i].keys);
        free(self->dom[i].dir);
    }
    free(self);
    *self_p = NULL;
}

int zx__auth_keys(zx__auth_t *self, const char *domain)
{
    for (int i = 0; self && i < 3; i++) {
        if (strcmp(domain, self->dom[i].name) == 0) {
            return atomic_load(&self->dom[i].count);
        }
    }
    return -1;
}

void zx__auth_counts(zx__auth_t *self, uint64_t *admitted, uint64_t *refused)
{
    *admitted = self ? atomic_load(&self->admitted) : 0;
    *refused = self ? atomic_load(&self->refused) : 0;
}

/* ---- bind policy -------------------------------------------------------------------- */

bool zx__auth_endpoint_is_loopback(const char *ep)
{
    if (!ep) {
        return false;
    }
    if (strncmp(ep, "ipc://", 6) == 0 || strncmp(ep, "inproc://", 9) == 0) {
        return true;
    }
    if (strncmp(ep, "tcp://", 6) != 0) {
        return false; /* pgm, udp, ...: not local */
    }
    const char *h = ep + 6;
    /* "tcp://iface;host:port" binds from a source: judge the host part */
    const char *semi = strchr(h, ';');
    if (semi) {
        h = semi + 1;
    }
    if (strncmp(h, "[::1]:", 6) == 0 || strncmp(h, "localhost:", 10) == 0) {
        return true;
    }
    if (strncmp(h, "127.", 4) == 0) {
        /* 127.a.b.c:port with a, b, c numbers */
        int dots = 1;
        for (const char *p = h + 4; *p && *p != ':'; p++) {
            if (*p == '.') {
                dots++;
            } else if (*p < '0' || *p > '9') {
                return false;
            }
        }
        return dots == 3 && strchr(h, ':') != NULL;
    }
    return false;
}

int zx__auth_bind_check(const char *endpoint, bool curve, bool secret, bool insecure)
{
    if (zx__auth_endpoint_is_loopback(endpoint)) {
        return 0;
    }
    if (curve || secret) {
        return 0;
    }
    if (insecure) {
        zsys_warning("zexec: INSECURE: %s is reachable from other hosts with no "
                     "authentication; anyone who can connect can run code on the workers",
                     endpoint);
        return 0;
    }
    zsys_error("zexec: refusing to bind %s: it is not loopback and neither CURVE keys "
               "(--key, --client-keys, --worker-keys) nor a shared secret (--secret-file or "
               "ZEXEC_SECRET) are configured; pass --insecure to run open anyway",
               endpoint);
    return -1;
}
