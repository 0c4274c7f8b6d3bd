// Typed wrappers for libcurl's variadic setters, which Swift cannot call directly.
#include <curl/curl.h>

typedef size_t (*sy_data_callback)(char *ptr, size_t size, size_t nmemb, void *userdata);
typedef int (*sy_seek_callback)(void *userdata, curl_off_t offset, int origin);

static inline CURLcode sy_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode sy_setopt_string(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode sy_setopt_pointer(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode sy_setopt_callback(CURL *h, CURLoption o, sy_data_callback v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode sy_setopt_seek_callback(CURL *h, sy_seek_callback v) { return curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, v); }
static inline CURLcode sy_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode sy_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode sy_getinfo_pointer(CURL *h, CURLINFO i, void **v) { return curl_easy_getinfo(h, i, v); }
static inline CURLMcode sy_multi_setopt_long(CURLM *m, CURLMoption o, long v) { return curl_multi_setopt(m, o, v); }
static inline CURLcode sy_msg_result(CURLMsg *msg) { return msg->data.result; }
static inline CURLcode sy_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
