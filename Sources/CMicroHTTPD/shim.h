// GNU libmicrohttpd, for the agent's loopback proxy. MHD_start_daemon is variadic (Swift cannot call
// it), so the daemon is started here; this layer also collects each request's body (up to a limit)
// and then hands the whole request to one callback.
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/// Called once per request, with its body; must queue a response (MHD_YES) or fail (MHD_NO).
typedef enum MHD_Result (*sy_mhd_handler)(void *cls, struct MHD_Connection *connection, const char *method,
                                          const char *uri, const unsigned char *body, size_t length, int too_large);

/// Called with each error libmicrohttpd reports (a refused connection, a socket problem), formatted.
typedef void (*sy_mhd_error_sink)(void *cls, const char *message);

struct sy_mhd_server {
    sy_mhd_handler handler;
    sy_mhd_error_sink error;
    void *cls;
    size_t max_body;
};

static inline void sy_mhd_log(void *cls, const char *format, va_list arguments) {
    struct sy_mhd_server *server = cls;
    char message[512];
    vsnprintf(message, sizeof message, format, arguments);
    size_t length = strlen(message);
    while (length > 0 && (message[length - 1] == '\n' || message[length - 1] == '\r')) message[--length] = 0;
    server->error(server->cls, message);
}

struct sy_mhd_request {
    char *uri;
    unsigned char *body;
    size_t length;
    size_t capacity;
    int started;
    int too_large;
};

static inline void *sy_mhd_uri_log(void *cls, const char *uri, struct MHD_Connection *connection) {
    (void)cls; (void)connection;
    struct sy_mhd_request *request = calloc(1, sizeof *request);
    if (request) request->uri = strdup(uri ? uri : "/");
    return request;
}

static inline void sy_mhd_completed(void *cls, struct MHD_Connection *connection, void **context,
                                    enum MHD_RequestTerminationCode code) {
    (void)cls; (void)connection; (void)code;
    struct sy_mhd_request *request = *context;
    if (!request) return;
    free(request->uri);
    free(request->body);
    free(request);
    *context = NULL;
}

static inline enum MHD_Result sy_mhd_access(void *cls, struct MHD_Connection *connection, const char *url,
                                            const char *method, const char *version, const char *upload,
                                            size_t *upload_size, void **context) {
    (void)url; (void)version;
    struct sy_mhd_server *server = cls;
    struct sy_mhd_request *request = *context;
    if (!request || !request->uri) return MHD_NO;
    if (!request->started) {
        request->started = 1;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (!request->too_large) {
            if (request->length + *upload_size > server->max_body) {
                request->too_large = 1;
            } else {
                if (request->length + *upload_size > request->capacity) {
                    size_t capacity = (request->length + *upload_size) * 2;
                    unsigned char *grown = realloc(request->body, capacity);
                    if (!grown) return MHD_NO;
                    request->body = grown;
                    request->capacity = capacity;
                }
                memcpy(request->body + request->length, upload, *upload_size);
                request->length += *upload_size;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return server->handler(server->cls, connection, method, request->uri, request->body, request->length, request->too_large);
}

/// A daemon on 127.0.0.1:`port` (0: any free port), a thread per connection, waiting with poll():
/// select() refuses every socket numbered 1024 or more, which a busy process reaches.
static inline struct MHD_Daemon *sy_mhd_start(uint16_t port, struct sy_mhd_server *server) {
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG,
                            port, NULL, NULL, sy_mhd_access, server,
                            MHD_OPTION_EXTERNAL_LOGGER, sy_mhd_log, server,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
                            MHD_OPTION_URI_LOG_CALLBACK, sy_mhd_uri_log, NULL,
                            MHD_OPTION_NOTIFY_COMPLETED, sy_mhd_completed, NULL,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
                            MHD_OPTION_END);
}

static inline uint16_t sy_mhd_port(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

/// Queues a response with a copy of `body`.
static inline enum MHD_Result sy_mhd_respond(struct MHD_Connection *connection, unsigned int status,
                                             const char *const *names, const char *const *values, size_t count,
                                             const unsigned char *body, size_t length) {
    struct MHD_Response *response = MHD_create_response_from_buffer(length, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!response) return MHD_NO;
    for (size_t i = 0; i < count; i++) MHD_add_response_header(response, names[i], values[i]);
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

/// A request header's value, or NULL.
static inline const char *sy_mhd_header(struct MHD_Connection *connection, const char *name) {
    return MHD_lookup_connection_value(connection, MHD_HEADER_KIND, name);
}

/// Refuses the request (the connection is closed).
static inline enum MHD_Result sy_mhd_refuse(void) { return MHD_NO; }
