// OpenSSL's libcrypto (already loaded by libcurl): digests for checking downloaded files, and
// X.509 parsing for the device certificate's validity and subject.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/bio.h>
#include <openssl/asn1.h>
#include <openssl/objects.h>
