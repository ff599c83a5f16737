// BlockingWorker: one thread that runs blocking jobs (libusb_open, descriptor reads, reset,
// set_configuration, ...) in order, so neither the loop nor the libusb event thread blocks on
// them. Jobs post their results back to a loop themselves. Owned by the object whose blocking
// calls it runs (a LibusbDevice, a LibusbProvider); post() may be called from any thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace devices {

class BlockingWorker {
 public:
  // `name` becomes the thread name (at most 15 characters are kept).
  explicit BlockingWorker(std::string name);
  ~BlockingWorker();  // stop()

  BlockingWorker(const BlockingWorker&) = delete;
  BlockingWorker& operator=(const BlockingWorker&) = delete;

  // Thread-safe. Queues `job`; the thread starts on the first job. Once stopped, the job is
  // destroyed without running and post() returns false.
  bool post(std::move_only_function<void()> job);
  // Lets the job in progress finish, destroys the queued ones without running them and joins.
  // Idempotent. Must not be called from a job.
  void stop();

 private:
  void run();

  const std::string name_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::move_only_function<void()>> jobs_;  // guarded by mu_
  bool stopping_ = false;                             // guarded by mu_
  std::thread thread_;                                // started under mu_ by the first post()
};

}  // namespace devices
