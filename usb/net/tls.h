// TLS 1.3 for every vusb-to-vusb link: a TlsContext (OpenSSL through Asio's SSL stream) that
// upgrades a connected socket stream into a TLS stream — a usb::net::Stream like any other, so
// the USB/IP, usbredir and HTTP code above it does not change and the bytes inside are the same.
//
// Peers authenticate either way:
//   - mutual certificates chained to a site CA (ca_file; cert_file + key_file of one's own);
//   - a TLS 1.3 external PSK, for small exporters where certificates are a burden: psk_file holds
//     "IDENTITY:KEY" lines, KEY being at least 16 bytes of text — the format of stunnel's
//     PSKsecrets, so the same file serves a stunnel tunnel in front of a stock usbip client.
// A server refuses a peer that presents neither (no certificate, one from another CA, an expired
// one, an unknown PSK identity or a wrong key) during the handshake, before any byte of the
// protocol is read; the peer's identity (certificate subject, common name, SHA-256 fingerprint,
// or PSK identity) lands in PeerInfo::tls for access lists (usb/net/peer_rule.h).
//
// A TlsContext is immutable once made and shared by every stream it upgraded; the streams live on
// the loop of the socket they were made from. OpenSSL and Asio's SSL headers stay in tls.cc.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "usb/core/error.h"
#include "usb/net/socket_stream.h"

namespace usb::net {

struct TlsConfig {
  std::string ca_file;    // PEM: the CA a peer's certificate must chain to
  std::string cert_file;  // PEM: this side's certificate (chain)
  std::string key_file;   // PEM: its private key
  std::string psk_file;   // "IDENTITY:KEY" lines
  // Client: which identity of psk_file to offer (empty: its first line).
  std::string psk_identity;
  // Client: the name (DNS name or IP address) the server's certificate must carry; empty: the
  // host dialled; "*": the chain only (a site CA that issues only to its own hosts).
  std::string server_name;
  // A peer that has not finished its handshake by then is dropped.
  std::chrono::milliseconds handshake_timeout{10000};
  bool enabled() const { return !cert_file.empty() || !psk_file.empty() || !ca_file.empty(); }
};

enum class TlsRole { kServer, kClient };

class TlsContext : public std::enable_shared_from_this<TlsContext> {
 public:
  // Reads the files and checks they make sense for `role`: a server needs a certificate or PSKs;
  // a client needs a CA or a PSK to know its server by. Errors name the file and OpenSSL's reason.
  static Result<std::shared_ptr<TlsContext>> make(const TlsConfig& config, TlsRole role);
  ~TlsContext();

  using UpgradeHandler = std::move_only_function<void(Result<std::unique_ptr<Stream>>)>;
  // Runs the handshake over `stream` (which it takes) and calls `done` once, on the stream's
  // loop: the TLS stream (its peer() carrying the TLS identity), or kDenied / kIo saying why —
  // also when the handshake does not finish within handshake_timeout. `server_name` (client)
  // overrides the config's.
  void upgrade(std::unique_ptr<SocketStream> stream, UpgradeHandler done,
               const std::string& server_name = {}) const;

  TlsRole role() const;
  const TlsConfig& config() const;
  // Handshakes refused or timed out so far (a server's count of failed peers).
  uint64_t failures() const;

  struct Impl;

 private:
  explicit TlsContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reads a PSK file: "IDENTITY:KEY" per line, '#' comments, blank lines skipped; identities 1..128
// bytes, keys 16..64 bytes. Errors name the line.
struct Psk {
  std::string identity;
  std::string key;
};
Result<std::vector<Psk>> read_psk_file(const std::string& path);

}  // namespace usb::net
