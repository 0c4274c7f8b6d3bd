// OpenSSL's digest API (libcrypto, already loaded by libcurl), for checking downloaded files.
#include <openssl/evp.h>
