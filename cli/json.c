/*  json.c - JSON <-> msgpack for submit, map and status, with jansson: the
    command line speaks JSON, the cluster msgpack. msgpack bin has no JSON
    counterpart: bytes that are valid UTF-8 text without NULs (exec's stdout,
    most of the time) become a plain JSON string, anything else an object
    {"$hex": "<two lowercase hex digits per byte>"} so a reader can tell
    text from binary and get the bytes back (docs/cli.md says so).
*/
#include "zxc.h"
#include "zx_proto.h"

#include <string.h>

/* {"$hex": "..."} for bytes that are not text. */
static json_t *s_hex(const char *p, size_t n)
{
    char *hex = malloc(2 * n + 1);
    if (!hex) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)p[i]);
    }
    json_t *j = json_pack("{s:s%}", "$hex", hex, 2 * n);
    free(hex);
    return j;
}

/* msgpack str and bin alike: a JSON string when the bytes are UTF-8 text
   without NULs (json_stringn checks UTF-8), else {"$hex": ...}. */
static json_t *s_bytes(const char *p, size_t n)
{
    if (n == 0) {
        return json_string(""); /* p may be NULL then */
    }
    json_t *j = memchr(p, 0, n) ? NULL : json_stringn(p, n);
    return j ? j : s_hex(p, n);
}

static json_t *s_to_json(const msgpack_object *o, int depth)
{
    if (depth > ZXP_MAX_DEPTH + 1) {
        return json_null();
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        /* JSON has no unsigned 64-bit type in jansson: beyond int64, a real */
        return o->via.u64 > (uint64_t)INT64_MAX ? json_real((double)o->via.u64)
                                                : json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR: return s_bytes(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: return s_bytes(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++) {
            json_t *v = s_to_json(&o->via.array.ptr[i], depth + 1);
            if (!v || json_array_append_new(a, v) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            json_t *v = s_to_json(&o->via.map.ptr[i].val, depth + 1);
            char *key = NULL;
            if (k->type == MSGPACK_OBJECT_STR) {
                key = strndup(k->via.str.ptr, k->via.str.size);
            } else {
                json_t *kj = s_to_json(k, depth + 1);
                key = kj ? json_dumps(kj, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
                json_decref(kj);
            }
            int rc = key && v ? json_object_set_new(m, key, v) : -1;
            if (rc != 0) {
                if (!key) {
                    json_decref(v);
                }
                free(key);
                json_decref(m);
                return NULL;
            }
            free(key);
        }
        return m;
    }
    default: return json_null(); /* ext: no JSON meaning */
    }
}

json_t *zxc_mp_to_json(const msgpack_object *o)
{
    return s_to_json(o, 0);
}

json_t *zxc_mp_buf_to_json(const void *buf, size_t len)
{
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object obj;
    json_t *j = NULL;
    if (zxp_mp_unpack(buf, len, &zone, &obj) == 0) {
        j = zxc_mp_to_json(&obj);
    }
    msgpack_zone_destroy(&zone);
    return j;
}

int zxc_json_to_mp(const json_t *j, msgpack_packer *pk)
{
    switch (json_typeof(j)) {
    case JSON_NULL: return msgpack_pack_nil(pk);
    case JSON_TRUE: return msgpack_pack_true(pk);
    case JSON_FALSE: return msgpack_pack_false(pk);
    case JSON_INTEGER: return msgpack_pack_int64(pk, (int64_t)json_integer_value(j));
    case JSON_REAL: return msgpack_pack_double(pk, json_real_value(j));
    case JSON_STRING: {
        size_t n = json_string_length(j);
        if (msgpack_pack_str(pk, n) != 0) {
            return -1;
        }
        return msgpack_pack_str_body(pk, json_string_value(j), n);
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        if (msgpack_pack_array(pk, n) != 0) {
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            if (zxc_json_to_mp(json_array_get(j, i), pk) != 0) {
                return -1;
            }
        }
        return 0;
    }
    case JSON_OBJECT: {
        if (msgpack_pack_map(pk, json_object_size(j)) != 0) {
            return -1;
        }
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v)
        {
            size_t n = strlen(key);
            if (msgpack_pack_str(pk, n) != 0 || msgpack_pack_str_body(pk, key, n) != 0 ||
                zxc_json_to_mp(v, pk) != 0) {
                return -1;
            }
        }
        return 0;
    }
    }
    return -1;
}

int zxc_json_print(FILE *out, const json_t *j)
{
    /* 17 significant digits: every double reads back as the same double */
    return json_dumpf(j, out, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
}
