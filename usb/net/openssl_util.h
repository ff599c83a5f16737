// What tls.cc and pki.cc both ask of OpenSSL: the reason for the last failure, and a
// certificate's SHA-256 fingerprint as access lists name it. Internal to usb/net (it names
// OpenSSL's types); functions over the calling thread's OpenSSL error queue.
#pragma once

#include <openssl/x509.h>

#include <string>

namespace usb::net::openssl {

// The oldest error on this thread's queue as text ("unknown error" if none); the queue is cleared.
std::string last_error();

// SHA-256 of the certificate's DER encoding, lower-case hex; empty if OpenSSL fails.
std::string sha256_fingerprint(X509* cert);

}  // namespace usb::net::openssl
