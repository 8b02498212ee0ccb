/* The compiled per-message path of `analyze` over classic pcap (see nbdscope/fastpath.py).
 *
 * A Scanner walks the records of a pcap window and takes, in one C loop, the in-order TCP
 * segments of the NBD connections Python has handed it ("adopted"): it passes over pure
 * ACKs, decodes compact READ requests and their simple replies, keeps the requests in
 * flight, the per-command counters and the session's message count, and passes over the
 * read data by count. It does so only while every message is "quiet": one that no rule
 * would say anything about, by limits Python computed from the session when it adopted
 * the connection. Anything else (another command, an error, a flag, a reused or unknown
 * cookie, a FIN, a retransmission, a record it cannot parse) makes it give the connection
 * back to Python (the release callback) before that message, and hand the rest of the
 * segment over as ordinary data. So Python stays the reference; this is a shortcut for
 * the messages whose only effect is bookkeeping.
 *
 * Bounds: every header field is read only after the record's captured length was checked
 * against the window, and every message field only from bytes of the current segment or
 * the small pending-header buffer (HDR_MAX bytes). Nothing is allocated by a length read
 * from the input: the flight table is capped (MAX_FLIGHTS, then the connection goes back).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_CONNS 64
#define MAX_FLIGHTS 1024
#define RECENT 256
#define REQ_SIZE 28
#define REPLY_SIZE 16
#define CHUNK_SIZE 28 /* a structured reply chunk's header and the offset of its data */
#define HDR_MAX 32
#define LAT_FLUSH 65536 /* latencies held before the connection is given back to hand them over */

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }
static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

typedef struct {
    uint64_t cookie, offset, start, end, frame;
    long long seq;
    double time;
    uint32_t length;
    int cmd, flags;
    PyObject *request; /* the decoder's event for a request taken over at adoption; NULL if made here */
} Flight;

typedef struct {
    uint8_t key[12]; /* source address, destination address, ports: as in an option-less IPv4 + TCP */
    uint32_t tcp_next;
    unsigned long long tcp_offset;
    unsigned long long fed; /* stream offset past the bytes taken (a pending header's included) */
    unsigned long long skip; /* payload bytes still to pass over */
    uint8_t hdr[HDR_MAX];
    int hlen;
    unsigned long long frame;
    double time;
} Side;

typedef struct { /* what the Statistics addon would have added to one command's counters */
    unsigned long long count, bytes;
    double *lat;
    size_t nlat, latcap;
} Tally;

/* A JSONL line of one kind of message (fastpath.jsonl_templates): literal text, each followed by a field. */
enum { F_END, F_FRAME, F_TIME, F_COOKIE, F_OFFSET, F_LENGTH, F_PAYLOAD, F_RFRAME, F_ROFFSET, F_RLENGTH, F_LATENCY,
       F_DATA, F_CHUNK_LENGTH, F_EPOCH, F_FIELDS };
enum { T_READ, T_WRITE, T_READ_REPLY, T_WRITE_REPLY, T_CHUNK, T_KINDS };
#define MAX_PIECES 24

typedef struct {
    int n;
    const char *lit[MAX_PIECES];
    Py_ssize_t len[MAX_PIECES];
    int field[MAX_PIECES];
} Template;

typedef struct { /* within these a message is quiet (computed by fastpath._limits from the session) */
    unsigned long long size, align, maxlen, wmax, chunkmax, bl_align, bl_max;
    int has_size, structured, writes;
} Limits;

typedef struct {
    int active;
    long conn_id;
    Side side[2]; /* 0: c2s (requests), 1: s2c (replies) */
    Flight flights[MAX_FLIGHTS]; /* in the order they were sent, as Python's dicts keep them */
    int nflights;
    uint64_t recent[RECENT]; /* cookies completed here, distinct, oldest first */
    int recent_cmd[RECENT];
    int nrecent;
    long long seq;
    unsigned long long messages, last_frame;
    double last_time;
    Tally tally[2]; /* READ, WRITE */
    unsigned long long blameless_writes; /* successful writes a correct server had no reason to refuse */
    Limits lim;
    PyObject *templates; /* the tuple the Template pointers point into, or NULL: no JSONL */
    Template tmpl[T_KINDS];
} Conn;

typedef struct {
    PyObject_HEAD
    int little;
    double divisor;
    Py_ssize_t ip; /* offset of the IP header in a frame */
    Py_ssize_t etype_at; /* offset of the ethertype (or protocol) word */
    uint32_t request_magic, simple_magic, chunk_magic;
    int read_cmd, write_cmd, done_flag, offset_data;
    PyObject *on_release; /* called with a connection's slot before the scanner gives it back */
    PyObject *write; /* the JSONL writer's output (bytes), or NULL */
    PyObject *fmt_float; /* a float as the JSONL writer prints it, for values outside the range done here */
    double t0;
    char *out; /* JSONL lines not yet written */
    size_t nout, outcap;
    Conn *conns[MAX_CONNS];
    int nconns; /* slots in use, active or not */
} Scanner;

/* ------------------------------------------------------------------ helpers */

/* Python's round(x, digits) for digits 1 and 6 (scale 10^digits), exactly: the exact decimal value of
 * x*scale rounded half-even, then the double nearest k/scale (a correctly rounded division gives just
 * that). Outside the range where the arithmetic below is exact, Python computes it. */
static int round_to(double x, double scale, int digits, double *out) {
    double y = x * scale;
    if (!(fabs(y) >= 1.0 && fabs(y) < 1e15)) {
        PyObject *f = PyFloat_FromDouble(x);
        if (f == NULL) return -1;
        PyObject *r = PyObject_CallMethod(f, "__round__", "i", digits);
        Py_DECREF(f);
        if (r == NULL) return -1;
        *out = PyFloat_AsDouble(r);
        Py_DECREF(r);
        return 0;
    }
    double err = fma(x, scale, -y); /* x*scale == y + err exactly */
    double k = floor(y);
    double s = ((y - k) - 0.5) + err; /* the sign of (exact fraction - 1/2) */
    if (s > 0 || (s == 0 && fmod(k, 2.0) != 0)) k += 1.0;
    double r = k / scale;
    *out = r == 0 ? copysign(0.0, x) : r;
    return 0;
}

static int round1(double x, double *out) { return round_to(x, 10.0, 1, out); }

static int find_flight(Conn *c, uint64_t cookie) {
    for (int i = c->nflights - 1; i >= 0; i--)
        if (c->flights[i].cookie == cookie) return i;
    return -1;
}

static void remember(Conn *c, uint64_t cookie, int cmd) {
    int i;
    for (i = c->nrecent - 1; i >= 0; i--)
        if (c->recent[i] == cookie) break;
    if (i < 0 && c->nrecent == RECENT) i = 0; /* the oldest goes */
    if (i >= 0) {
        memmove(c->recent + i, c->recent + i + 1, (size_t)(c->nrecent - i - 1) * sizeof(uint64_t));
        memmove(c->recent_cmd + i, c->recent_cmd + i + 1, (size_t)(c->nrecent - i - 1) * sizeof(int));
        c->nrecent--;
    }
    c->recent[c->nrecent] = cookie;
    c->recent_cmd[c->nrecent] = cmd;
    c->nrecent++;
}

static int add_latency(Tally *t, double us) {
    if (t->nlat == t->latcap) {
        size_t cap = t->latcap ? t->latcap * 2 : 1024;
        double *lat = PyMem_Realloc(t->lat, cap * sizeof(double));
        if (lat == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->lat = lat;
        t->latcap = cap;
    }
    t->lat[t->nlat++] = us;
    return 0;
}

static void counted(Conn *c, unsigned long long frame, double time) {
    c->messages++;
    if (frame > c->last_frame) c->last_frame = frame;
    c->last_time = time;
}

/* ------------------------------------------------------------------ JSONL lines */

static int round6(double x, double *out) { return round_to(x, 1e6, 6, out); }

static int put(Scanner *s, const char *p, size_t n) {
    if (s->nout + n > s->outcap) {
        size_t cap = s->outcap ? s->outcap : 1 << 16;
        while (cap < s->nout + n) cap *= 2;
        char *out = PyMem_Realloc(s->out, cap);
        if (out == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->out = out;
        s->outcap = cap;
    }
    memcpy(s->out + s->nout, p, n);
    s->nout += n;
    return 0;
}

static int put_u64(Scanner *s, unsigned long long v) {
    char digits[24];
    int i = 24;
    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return put(s, digits + i, (size_t)(24 - i));
}

/* A float as orjson prints it: the shortest repr, which is Python's repr from 1e-4 up to 1e15 (and 0);
 * outside that range orjson's own spelling, asked of Python. */
static int put_float(Scanner *s, double x) {
    if (x == 0 || (fabs(x) >= 1e-4 && fabs(x) < 1e15)) {
        char *text = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (text == NULL) return -1;
        int r = put(s, text, strlen(text));
        PyMem_Free(text);
        return r;
    }
    PyObject *f = PyFloat_FromDouble(x);
    if (f == NULL) return -1;
    PyObject *b = PyObject_CallOneArg(s->fmt_float, f);
    Py_DECREF(f);
    if (b == NULL) return -1;
    int r = PyBytes_Check(b) ? put(s, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b)) : -1;
    if (r < 0 && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "fmt_float must give bytes");
    Py_DECREF(b);
    return r;
}

/* x, the double nearest to k / 10^digits (k >= 0), as orjson prints it, without a float conversion: where
 * 10^-digits apart decimals are more than an ulp apart and no exponent is printed (1e-4 <= x < 2^31), the
 * shortest repr is that decimal itself, trailing zeros dropped but one. Elsewhere put_float. */
static int put_fixed(Scanner *s, double x, double k, int digits, double scale) {
    if (!(k >= 1.0 && x >= 1e-4 && x < 2147483648.0) || nearbyint(k) != k) return put_float(s, x);
    unsigned long long n = (unsigned long long)k, unit = (unsigned long long)scale;
    char text[48];
    int i = 48, shown = 0;
    unsigned long long frac = n % unit;
    for (int j = 0; j < digits; j++, frac /= 10) {
        int digit = (int)(frac % 10);
        if (digit || shown || j == digits - 1) {
            text[--i] = (char)('0' + digit);
            shown = 1;
        }
    }
    text[--i] = '.';
    unsigned long long whole = n / unit;
    do {
        text[--i] = (char)('0' + whole % 10);
        whole /= 10;
    } while (whole);
    return put(s, text + i, (size_t)(48 - i));
}

static int flush_out(Scanner *s) {
    if (!s->nout) return 0;
    PyObject *b = PyBytes_FromStringAndSize(s->out, (Py_ssize_t)s->nout);
    if (b == NULL) return -1;
    s->nout = 0;
    PyObject *r = PyObject_CallOneArg(s->write, b);
    Py_DECREF(b);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* One JSONL line of this kind; v holds the integer fields, times the two floats (time, latency). */
static int emit(Scanner *s, Conn *c, int kind, const unsigned long long *v, double time, double latency) {
    Template *t = &c->tmpl[kind];
    for (int i = 0; i < t->n; i++) {
        if (put(s, t->lit[i], (size_t)t->len[i]) < 0) return -1;
        int f = t->field[i], r = 0;
        if (f == F_END) continue;
        if (f == F_TIME || f == F_EPOCH) { /* as report/records.py rounds: to microseconds through an integer */
            double k = nearbyint((f == F_TIME ? time - s->t0 : time) * 1e6);
            r = put_fixed(s, k / 1e6, k, 6, 1e6);
        } else if (f == F_LATENCY)
            r = put_fixed(s, latency, nearbyint(latency * 10.0), 1, 10.0);
        else
            r = put_u64(s, v[f]);
        if (r < 0) return -1;
    }
    return s->nout > (1 << 20) ? flush_out(s) : 0;
}

/* ------------------------------------------------------------------ messages */

/* One request header (REQ_SIZE bytes at h): 1 taken (its payload length in *data), 0 not quiet. */
static int take_request(Scanner *s, Conn *c, const uint8_t *h, unsigned long long start, unsigned long long frame,
                        double time, unsigned long long *data) {
    Limits *l = &c->lim;
    int flags = be16(h + 4), cmd = be16(h + 6);
    uint64_t cookie = be64(h + 8), offset = be64(h + 16);
    uint32_t length = be32(h + 24);
    int write = cmd == s->write_cmd;
    if (flags || length == 0 || !(cmd == s->read_cmd || (write && l->writes))) return 0;
    if (length > (write ? l->wmax : l->maxlen)) return 0;
    if (l->align && (offset % l->align || length % l->align)) return 0;
    if (l->has_size && (offset > l->size || length > l->size - offset)) return 0;
    if (c->nflights == MAX_FLIGHTS || find_flight(c, cookie) >= 0) return 0;
    Flight *f = &c->flights[c->nflights++];
    f->cookie = cookie;
    f->offset = offset;
    f->length = length;
    f->cmd = cmd;
    f->flags = flags;
    f->seq = c->seq++;
    f->start = start;
    f->end = start + REQ_SIZE + (write ? length : 0);
    f->frame = frame;
    f->time = time;
    f->request = NULL;
    Tally *t = &c->tally[write];
    t->count++;
    if (write) t->bytes += length;
    *data = write ? length : 0;
    counted(c, frame, time);
    if (c->templates) {
        unsigned long long v[F_FIELDS] = {0};
        v[F_FRAME] = frame;
        v[F_COOKIE] = cookie;
        v[F_OFFSET] = offset;
        v[F_LENGTH] = length;
        v[F_PAYLOAD] = write ? length : 0;
        if (emit(s, c, write ? T_WRITE : T_READ, v, time, 0.0) < 0) return -1;
    }
    return 1;
}

/* The successful reply that completes flight i (a chunk: of chunk_length bytes); the read data that follows
 * in *data. 1, or -1 on error. */
static int take_reply(Scanner *s, Conn *c, int i, unsigned long long frame, double time, unsigned long long *data,
                      unsigned long long chunk_length) {
    Flight *f = &c->flights[i];
    int write = f->cmd == s->write_cmd;
    Tally *t = &c->tally[write];
    double latency;
    if (round1((time - f->time) * 1e6, &latency) < 0 || add_latency(t, latency) < 0) return -1;
    if (c->templates) {
        unsigned long long v[F_FIELDS] = {0};
        v[F_FRAME] = frame;
        v[F_COOKIE] = f->cookie;
        v[F_RFRAME] = f->frame;
        v[F_ROFFSET] = f->offset;
        v[F_RLENGTH] = f->length;
        v[F_DATA] = write ? 0 : f->length;
        v[F_OFFSET] = f->offset;
        v[F_CHUNK_LENGTH] = chunk_length;
        if (emit(s, c, chunk_length ? T_CHUNK : write ? T_WRITE_REPLY : T_READ_REPLY, v, time, latency) < 0)
            return -1;
    }
    *data = write ? 0 : f->length;
    if (!write)
        t->bytes += f->length;
    else if (f->length && !(c->lim.has_size && (f->offset > c->lim.size || f->length > c->lim.size - f->offset)) &&
             !(c->lim.bl_align && (f->offset % c->lim.bl_align || f->length % c->lim.bl_align)) &&
             f->length <= c->lim.bl_max)
        c->blameless_writes++;
    c->seq++;
    remember(c, f->cookie, f->cmd);
    Py_CLEAR(f->request);
    memmove(f, f + 1, (size_t)(c->nflights - i - 1) * sizeof(Flight));
    c->nflights--;
    counted(c, frame, time);
    return 1;
}

/* A simple reply: quiet when it succeeds, answers a request without flags and, where structured replies
 * were agreed, not a READ (those must be chunks). */
static int take_simple(Scanner *s, Conn *c, const uint8_t *h, unsigned long long frame, double time,
                       unsigned long long *data) {
    if (be32(h + 4) != 0) return 0;
    int i = find_flight(c, be64(h + 8));
    if (i < 0 || c->flights[i].flags) return 0;
    int cmd = c->flights[i].cmd;
    if (!((cmd == s->write_cmd && c->lim.writes) || (cmd == s->read_cmd && !c->lim.structured))) return 0;
    return take_reply(s, c, i, frame, time, data, 0);
}

/* A structured chunk (header and data offset): quiet when it is an OFFSET_DATA chunk marked DONE (and
 * nothing else) that holds all the data its READ asked for, at the offset asked. */
static int take_chunk(Scanner *s, Conn *c, const uint8_t *h, unsigned long long frame, double time,
                      unsigned long long *data) {
    if (be16(h + 4) != s->done_flag || be16(h + 6) != s->offset_data) return 0;
    uint32_t length = be32(h + 16);
    if (length < 9 || length - 8 > c->lim.chunkmax) return 0;
    int i = find_flight(c, be64(h + 8));
    if (i < 0 || c->flights[i].cmd != s->read_cmd || c->flights[i].flags) return 0;
    Flight *f = &c->flights[i];
    if (be64(h + 20) != f->offset || length - 8 != f->length) return 0;
    return take_reply(s, c, i, frame, time, data, length);
}

/* The header size a message with this magic has here (0: none the Scanner takes). */
static int header_size(Scanner *s, Conn *c, int dir, uint32_t magic) {
    if (dir == 0) return magic == s->request_magic ? REQ_SIZE : 0;
    if (magic == s->simple_magic) return REPLY_SIZE;
    return magic == s->chunk_magic && c->lim.structured ? CHUNK_SIZE : 0;
}

/* Decode one segment's payload of a half. Returns the number of payload bytes taken: all of
 * them, or fewer when a message was not quiet (it begins there, after any pending header bytes,
 * which stay in hdr for Python's buffer); -1 on error. */
static Py_ssize_t take_payload(Scanner *s, Conn *c, int dir, const uint8_t *p, Py_ssize_t n,
                               unsigned long long frame, double time) {
    Side *d = &c->side[dir];
    Py_ssize_t i = 0;
    d->frame = frame;
    d->time = time;
    while (i < n) {
        if (d->skip) {
            unsigned long long k = (unsigned long long)(n - i) < d->skip ? (unsigned long long)(n - i) : d->skip;
            d->skip -= k;
            d->fed += k;
            i += (Py_ssize_t)k;
            continue;
        }
        Py_ssize_t left = n - i, have = d->hlen + left; /* header bytes at hand: pending, then this segment */
        if (have < 4) { /* not even a magic: keep them */
            memcpy(d->hdr + d->hlen, p + i, (size_t)left);
            d->hlen += (int)left;
            d->fed += (unsigned long long)left;
            return n;
        }
        uint8_t m[4];
        for (int j = 0; j < 4; j++) m[j] = j < d->hlen ? d->hdr[j] : p[i + j - d->hlen];
        int size = header_size(s, c, dir, be32(m)); /* Python judges a magic as soon as it has one */
        if (size == 0) return i;
        if (have < size) {
            memcpy(d->hdr + d->hlen, p + i, (size_t)left);
            d->hlen += (int)left;
            d->fed += (unsigned long long)left;
            return n;
        }
        const uint8_t *h = p + i;
        uint8_t whole[HDR_MAX];
        Py_ssize_t used = size - d->hlen; /* bytes of this segment the header takes */
        if (d->hlen) {
            memcpy(whole, d->hdr, (size_t)d->hlen);
            memcpy(whole + d->hlen, p + i, (size_t)used);
            h = whole;
        }
        unsigned long long start = d->fed - (unsigned long long)d->hlen, data = 0;
        int took;
        if (dir == 0)
            took = take_request(s, c, h, start, frame, time, &data);
        else if (size == REPLY_SIZE)
            took = take_simple(s, c, h, frame, time, &data);
        else
            took = take_chunk(s, c, h, frame, time, &data);
        if (took < 0) return -1;
        if (took == 0) return i; /* the pending bytes stay in hdr */
        d->hlen = 0;
        d->fed += (unsigned long long)used;
        d->skip = data;
        i += used;
    }
    return n;
}

/* ------------------------------------------------------------------ the scanner */

static int give_back(Scanner *s, int slot) {
    if (flush_out(s) < 0) return -1;
    PyObject *r = PyObject_CallFunction(s->on_release, "i", slot);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static int find_conn(Scanner *s, const uint8_t *key, int *dir) {
    for (int i = 0; i < s->nconns; i++) {
        Conn *c = s->conns[i];
        if (c == NULL || !c->active) continue;
        for (int k = 0; k < 2; k++)
            if (memcmp(c->side[k].key, key, 12) == 0) {
                *dir = k;
                return i;
            }
    }
    return -1;
}

static void clear_conn(Conn *c) {
    for (int i = 0; i < c->nflights; i++) Py_CLEAR(c->flights[i].request);
    c->nflights = 0;
    for (int k = 0; k < 2; k++) {
        PyMem_Free(c->tally[k].lat);
        c->tally[k].lat = NULL;
        c->tally[k].nlat = c->tally[k].latcap = 0;
    }
    Py_CLEAR(c->templates);
    c->active = 0;
}

static int Scanner_init(Scanner *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"little", "nano", "ip", "etype_at", "request_magic", "simple_magic", "chunk_magic",
                            "read_cmd", "write_cmd", "done_flag", "offset_data", "on_release", NULL};
    int little, nano, read_cmd, write_cmd, done_flag, offset_data;
    Py_ssize_t ip, etype_at;
    unsigned int rq, sr, cm;
    PyObject *cb;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ppnnIIIiiiiO", names, &little, &nano, &ip, &etype_at, &rq, &sr, &cm,
                                     &read_cmd, &write_cmd, &done_flag, &offset_data, &cb))
        return -1;
    if (ip < 0 || ip > 64 || etype_at < 0 || etype_at + 2 > ip) {
        PyErr_SetString(PyExc_ValueError, "bad frame layout");
        return -1;
    }
    self->little = little;
    self->divisor = nano ? 1e9 : 1e6;
    self->ip = ip;
    self->etype_at = etype_at;
    self->request_magic = rq;
    self->simple_magic = sr;
    self->chunk_magic = cm;
    self->read_cmd = read_cmd;
    self->write_cmd = write_cmd;
    self->done_flag = done_flag;
    self->offset_data = offset_data;
    Py_XSETREF(self->on_release, Py_NewRef(cb));
    return 0;
}

static void Scanner_dealloc(Scanner *self) {
    for (int i = 0; i < self->nconns; i++)
        if (self->conns[i] != NULL) {
            clear_conn(self->conns[i]);
            PyMem_Free(self->conns[i]);
        }
    Py_XDECREF(self->on_release);
    Py_XDECREF(self->write);
    Py_XDECREF(self->fmt_float);
    PyMem_Free(self->out);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int side_from(Side *d, PyObject *t) {
    const char *key;
    Py_ssize_t klen;
    if (!PyArg_ParseTuple(t, "y#IKKK", &key, &klen, &d->tcp_next, &d->tcp_offset, &d->fed, &d->skip)) return -1;
    if (klen != 12) {
        PyErr_SetString(PyExc_ValueError, "a key is 12 bytes");
        return -1;
    }
    memcpy(d->key, key, 12);
    d->hlen = 0;
    d->frame = 0;
    d->time = 0.0;
    return 0;
}

static int templates_from(Conn *c, PyObject *t) {
    if (t == Py_None) return 0;
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != T_KINDS) goto bad;
    for (int k = 0; k < T_KINDS; k++) {
        PyObject *pieces = PyTuple_GET_ITEM(t, k);
        if (!PyTuple_Check(pieces) || PyTuple_GET_SIZE(pieces) > MAX_PIECES) goto bad;
        Template *m = &c->tmpl[k];
        m->n = (int)PyTuple_GET_SIZE(pieces);
        for (int i = 0; i < m->n; i++) {
            PyObject *piece = PyTuple_GET_ITEM(pieces, i);
            if (!PyTuple_Check(piece) || PyTuple_GET_SIZE(piece) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(piece, 0)))
                goto bad;
            long f = PyLong_AsLong(PyTuple_GET_ITEM(piece, 1));
            if (f < 0 || f >= F_FIELDS) goto bad;
            m->lit[i] = PyBytes_AS_STRING(PyTuple_GET_ITEM(piece, 0));
            m->len[i] = PyBytes_GET_SIZE(PyTuple_GET_ITEM(piece, 0));
            m->field[i] = (int)f;
        }
    }
    c->templates = Py_NewRef(t);
    return 0;
bad:
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad JSONL templates");
    return -1;
}

/* output(write, fmt_float, t0): where the JSONL lines of connections adopted with templates go */
static PyObject *Scanner_output(Scanner *self, PyObject *args) {
    PyObject *write, *fmt;
    double t0;
    if (!PyArg_ParseTuple(args, "OOd", &write, &fmt, &t0)) return NULL;
    Py_XSETREF(self->write, Py_NewRef(write));
    Py_XSETREF(self->fmt_float, Py_NewRef(fmt));
    self->t0 = t0;
    Py_RETURN_NONE;
}

/* adopt(conn_id, c2s, s2c, seq, limits, flights, templates) -> slot
 * c2s, s2c: (key, tcp next seq, tcp offset, decoder fed, decoder skip);
 * limits: (size or -1, align, maxlen, wmax, chunkmax, bl_align, bl_max, structured, writes), see Limits;
 * flights: (cookie, command, flags, offset, length, frame, time, request) in the decoder's order;
 * templates: None, or the JSONL lines to write for the messages taken (after ``output``) */
static PyObject *Scanner_adopt(Scanner *self, PyObject *args) {
    long conn_id;
    PyObject *c2s, *s2c, *flights, *templates;
    long long seq, size;
    Limits l;
    if (!PyArg_ParseTuple(args, "lO!O!L(LKKKKKKpp)O!O", &conn_id, &PyTuple_Type, &c2s, &PyTuple_Type, &s2c, &seq,
                          &size, &l.align, &l.maxlen, &l.wmax, &l.chunkmax, &l.bl_align, &l.bl_max, &l.structured,
                          &l.writes, &PyList_Type, &flights, &templates))
        return NULL;
    if (templates != Py_None && self->write == NULL) {
        PyErr_SetString(PyExc_ValueError, "templates without an output");
        return NULL;
    }
    l.has_size = size >= 0;
    l.size = size >= 0 ? (unsigned long long)size : 0;
    if (PyList_GET_SIZE(flights) >= MAX_FLIGHTS) {
        PyErr_SetString(PyExc_ValueError, "too many requests in flight");
        return NULL;
    }
    int slot = -1;
    for (int i = 0; i < self->nconns; i++)
        if (self->conns[i] != NULL && !self->conns[i]->active) {
            slot = i;
            break;
        }
    if (slot < 0) {
        if (self->nconns == MAX_CONNS) {
            PyErr_SetString(PyExc_OverflowError, "no free slot");
            return NULL;
        }
        Conn *fresh = PyMem_Calloc(1, sizeof(Conn));
        if (fresh == NULL) return PyErr_NoMemory();
        slot = self->nconns++;
        self->conns[slot] = fresh;
    }
    Conn *c = self->conns[slot];
    memset(c, 0, sizeof(Conn));
    if (side_from(&c->side[0], c2s) < 0 || side_from(&c->side[1], s2c) < 0) return NULL;
    c->conn_id = conn_id;
    c->seq = seq;
    c->lim = l;
    if (templates_from(c, templates) < 0) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(flights); i++) {
        Flight *f = &c->flights[i];
        PyObject *req;
        unsigned long long cookie, offset, frame, length;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(flights, i), "KiiKKKdO", &cookie, &f->cmd, &f->flags, &offset,
                              &length, &frame, &f->time, &req)) {
            clear_conn(c);
            return NULL;
        }
        f->cookie = cookie;
        f->offset = offset;
        f->length = (uint32_t)(length > 0xFFFFFFFFull ? 0xFFFFFFFFull : length);
        if (length > 0xFFFFFFFFull) f->cmd = -1; /* never answered here */
        f->frame = frame;
        f->request = Py_NewRef(req);
        c->nflights++;
    }
    c->active = 1;
    return PyLong_FromLong(slot);
}

static PyObject *side_state(Side *d) {
    return Py_BuildValue("IKKKy#Kd", d->tcp_next, d->tcp_offset, d->fed, d->skip, (const char *)d->hdr,
                         (Py_ssize_t)d->hlen, d->frame, d->time);
}

/* release(slot) -> the connection's state, and the slot is free again:
 * (conn_id, c2s, s2c, seq, messages, last_frame, last_time, tallies [(command, count, bytes, latencies as
 *  bytes of doubles)], blameless writes, flights [(cookie, command, flags, offset, length, frame, time, seq,
 *  start, end, request or None)], recent [(cookie, command)] oldest first)
 * c2s, s2c: (tcp next seq, tcp offset, fed, skip, pending header bytes, frame, time) */
static PyObject *Scanner_release(Scanner *self, PyObject *arg) {
    long slot = PyLong_AsLong(arg);
    if (slot == -1 && PyErr_Occurred()) return NULL;
    if (slot < 0 || slot >= self->nconns || self->conns[slot] == NULL || !self->conns[slot]->active) {
        PyErr_SetString(PyExc_KeyError, "no connection in that slot");
        return NULL;
    }
    Conn *c = self->conns[slot];
    PyObject *flights = PyList_New(c->nflights), *recent = PyList_New(c->nrecent);
    PyObject *out = NULL;
    if (flights == NULL || recent == NULL) goto done;
    for (int i = 0; i < c->nflights; i++) {
        Flight *f = &c->flights[i];
        PyObject *t = Py_BuildValue("KiiKKKdLKKO", (unsigned long long)f->cookie, f->cmd, f->flags,
                                    (unsigned long long)f->offset, (unsigned long long)f->length,
                                    (unsigned long long)f->frame, f->time, f->seq, (unsigned long long)f->start,
                                    (unsigned long long)f->end, f->request ? f->request : Py_None);
        if (t == NULL) goto done;
        PyList_SET_ITEM(flights, i, t);
    }
    for (int i = 0; i < c->nrecent; i++) {
        PyObject *t = Py_BuildValue("Ki", (unsigned long long)c->recent[i], c->recent_cmd[i]);
        if (t == NULL) goto done;
        PyList_SET_ITEM(recent, i, t);
    }
    Tally *r = &c->tally[0], *w = &c->tally[1];
    out = Py_BuildValue("lNNLKKd[(iKKy#)(iKKy#)]KOO", c->conn_id, side_state(&c->side[0]), side_state(&c->side[1]),
                        c->seq, c->messages, c->last_frame, c->last_time, self->read_cmd, r->count, r->bytes,
                        r->lat ? (const char *)r->lat : "", (Py_ssize_t)(r->nlat * sizeof(double)), self->write_cmd,
                        w->count, w->bytes, w->lat ? (const char *)w->lat : "", (Py_ssize_t)(w->nlat * sizeof(double)),
                        c->blameless_writes,
                        flights, recent);
    if (out != NULL) clear_conn(c);
done:
    Py_XDECREF(flights);
    Py_XDECREF(recent);
    return out;
}

/* scan(buf, pos, end, number) -> (pos, number, time, rest)
 * Takes whole records from buf[pos:end] while they belong to adopted connections and stay
 * quiet. Stops before a record it does not take (rest None), or after one whose payload it
 * took only in part: rest is then (conn_id, dir, start, stop), the untaken payload in buf,
 * for Python to decode (the connection was released first). number counts the records taken. */
static PyObject *Scanner_scan(Scanner *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, end;
    unsigned long long number;
    double time = 0.0;
    if (!PyArg_ParseTuple(args, "y*nnK", &view, &pos, &end, &number)) return NULL;
    PyObject *rest = NULL;
    const uint8_t *buf = view.buf;
    if (pos < 0 || end > view.len || pos > end) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bad window");
        return NULL;
    }
    Py_ssize_t ip = self->ip, least = ip + 40;
    while (end - pos >= 16) {
        const uint8_t *r = buf + pos;
        uint32_t sec = self->little ? le32(r) : be32(r), frac = self->little ? le32(r + 4) : be32(r + 4);
        uint32_t caplen = self->little ? le32(r + 8) : be32(r + 8);
        Py_ssize_t start = pos + 16, stop = start + (Py_ssize_t)caplen;
        if (stop > end || caplen < (uint32_t)least) break;
        const uint8_t *f = buf + start;
        const uint8_t *iph = f + ip, *tcp = iph + 20;
        if (be16(f + self->etype_at) != 0x0800 || iph[0] != 0x45 || iph[9] != 6) break;
        int dir;
        int slot = find_conn(self, iph + 12, &dir);
        if (slot < 0) break;
        Conn *c = self->conns[slot];
        Side *d = &c->side[dir];
        if (c->tally[0].nlat + c->tally[1].nlat >= LAT_FLUSH) { /* hand the latencies over now and then: memory stays flat */
            if (give_back(self, slot) < 0) goto fail;
            break;
        }
        uint16_t total = be16(iph + 2), frag = be16(iph + 6), dflags = be16(tcp + 12);
        uint32_t seq = be32(tcp + 4);
        if ((frag & 0x3FFF) || dflags < 0x5000 || (dflags & 7) || ip + total > (Py_ssize_t)caplen ||
            seq != d->tcp_next) {
            if (give_back(self, slot) < 0) goto fail;
            break; /* Python takes this record */
        }
        Py_ssize_t pstart = start + ip + 20 + ((dflags >> 10) & 0x3C);
        Py_ssize_t pend = total && ip + total < (Py_ssize_t)caplen ? start + ip + total : stop;
        time = (double)sec + (double)frac / self->divisor;
        number++;
        pos = stop;
        if (pstart >= pend) continue; /* a pure ACK: TCP has nothing to deliver while no hole waits */
        Py_ssize_t n = pend - pstart;
        d->tcp_next = (uint32_t)(seq + (uint32_t)n);
        d->tcp_offset += (unsigned long long)n;
        Py_ssize_t took = take_payload(self, c, dir, buf + pstart, n, number, time);
        if (took < 0) goto fail;
        if (took < n) {
            long conn_id = c->conn_id;
            if (give_back(self, slot) < 0) goto fail;
            rest = Py_BuildValue("lsnn", conn_id, dir == 0 ? "c2s" : "s2c", pstart + took, pend);
            if (rest == NULL) goto fail;
            break;
        }
    }
    PyBuffer_Release(&view);
    if (flush_out(self) < 0) {
        Py_XDECREF(rest);
        return NULL;
    }
    return Py_BuildValue("nKdN", pos, number, time, rest ? rest : Py_NewRef(Py_None));
fail:
    PyBuffer_Release(&view);
    self->nout = 0; /* lines of a failed scan are not written after later ones */
    return NULL;
}

/* feed(slot, dir, data, frame, time, segment) -> (frame, rest)
 * The proxy's entry: one direction's relayed bytes of an adopted connection (a tap data record: no
 * capture or TCP framing, in order, nothing lost), cut into segments of `segment` bytes that are the
 * frames after `frame`, as the tap reader numbers them. All taken: (the last frame used, None).
 * Otherwise the connection was given back first and rest is the offset in data where Python goes on,
 * inside the segment of the frame returned. */
static PyObject *Scanner_feed(Scanner *self, PyObject *args) {
    int slot, dir;
    Py_buffer view;
    unsigned long long frame;
    double time;
    Py_ssize_t segment;
    if (!PyArg_ParseTuple(args, "iiy*Kdn", &slot, &dir, &view, &frame, &time, &segment)) return NULL;
    if (slot < 0 || slot >= self->nconns || self->conns[slot] == NULL || !self->conns[slot]->active ||
        dir < 0 || dir > 1 || segment <= 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "no such connection, direction or segment size");
        return NULL;
    }
    Conn *c = self->conns[slot];
    const uint8_t *p = view.buf;
    Py_ssize_t n = view.len, at = 0, rest = -1;
    if (n && c->tally[0].nlat + c->tally[1].nlat >= LAT_FLUSH) { /* the latencies go over now and then */
        if (give_back(self, slot) < 0) goto fail;
        rest = 0;
        frame++;
    }
    while (rest < 0 && at < n) {
        Py_ssize_t len = n - at < segment ? n - at : segment;
        frame++;
        Py_ssize_t took = take_payload(self, c, dir, p + at, len, frame, time);
        if (took < 0) goto fail;
        if (took < len) {
            if (give_back(self, slot) < 0) goto fail;
            rest = at + took;
        }
        at += len;
    }
    PyBuffer_Release(&view);
    if (flush_out(self) < 0) return NULL;
    if (rest < 0) return Py_BuildValue("KO", frame, Py_None);
    return Py_BuildValue("Kn", frame, rest);
fail:
    PyBuffer_Release(&view);
    self->nout = 0;
    return NULL;
}

static PyObject *Scanner_adopted(Scanner *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(0);
    for (int i = 0; out != NULL && i < self->nconns; i++)
        if (self->conns[i] != NULL && self->conns[i]->active) {
            PyObject *n = PyLong_FromLong(i);
            if (n == NULL || PyList_Append(out, n) < 0) Py_CLEAR(out);
            Py_XDECREF(n);
        }
    return out;
}

static PyMethodDef Scanner_methods[] = {
    {"adopt", (PyCFunction)Scanner_adopt, METH_VARARGS, "Take a connection over; its slot."},
    {"release", (PyCFunction)Scanner_release, METH_O, "Give a connection back: its state."},
    {"scan", (PyCFunction)Scanner_scan, METH_VARARGS, "Take the records of adopted connections."},
    {"feed", (PyCFunction)Scanner_feed, METH_VARARGS, "Take relayed bytes of an adopted connection."},
    {"adopted", (PyCFunction)Scanner_adopted, METH_NOARGS, "The slots in use."},
    {"output", (PyCFunction)Scanner_output, METH_VARARGS, "Where JSONL lines go."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nbdscope._fastpath.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The compiled per-message path over classic pcap records.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
};

static PyObject *py_round(PyObject *mod, PyObject *args) {
    double x, r;
    int digits;
    (void)mod;
    if (!PyArg_ParseTuple(args, "di", &x, &digits)) return NULL;
    if (digits != 1 && digits != 6) {
        PyErr_SetString(PyExc_ValueError, "digits: 1 or 6");
        return NULL;
    }
    if ((digits == 1 ? round1(x, &r) : round6(x, &r)) < 0) return NULL;
    return PyFloat_FromDouble(r);
}

/* format(x, digits, fmt_float): a time (digits 6, rounded to microseconds first) or a latency (digits 1, already
 * rounded) as a JSONL line holds it, fmt_float printing what the scanner leaves to Python (for tests) */
static PyObject *py_format(PyObject *mod, PyObject *args) {
    double x;
    int digits;
    PyObject *fmt;
    (void)mod;
    if (!PyArg_ParseTuple(args, "diO", &x, &digits, &fmt)) return NULL;
    if (digits != 1 && digits != 6) {
        PyErr_SetString(PyExc_ValueError, "digits: 1 or 6");
        return NULL;
    }
    Scanner s;
    memset(&s, 0, sizeof s);
    s.fmt_float = fmt;
    double k = nearbyint(x * (digits == 6 ? 1e6 : 10.0));
    int r = digits == 6 ? put_fixed(&s, k / 1e6, k, 6, 1e6) : put_fixed(&s, x, k, 1, 10.0);
    PyObject *out = r < 0 ? NULL : PyBytes_FromStringAndSize(s.out ? s.out : "", (Py_ssize_t)s.nout);
    PyMem_Free(s.out);
    return out;
}

static PyMethodDef module_methods[] = {
    {"round", py_round, METH_VARARGS, "round(x, digits) as the scanner computes it (for tests)."},
    {"format", py_format, METH_VARARGS, "A time or latency as the scanner writes it (for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "nbdscope._fastpath", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&ScannerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
