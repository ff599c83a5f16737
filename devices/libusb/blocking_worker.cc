#include "devices/libusb/blocking_worker.h"

#include <pthread.h>

namespace devices {

BlockingWorker::BlockingWorker(std::string name) : name_(std::move(name)) {}

BlockingWorker::~BlockingWorker() {
  stop();
}

bool BlockingWorker::post(std::move_only_function<void()> job) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      jobs_.push_back(std::move(job));
      if (!thread_.joinable()) {
        thread_ = std::thread([this] { run(); });
      }
      cv_.notify_one();
      return true;
    }
  }
  // Stopped: `job` (and whatever it captured) is destroyed here, outside the lock.
  return false;
}

void BlockingWorker::stop() {
  std::deque<std::move_only_function<void()>> dropped;
  std::thread thread;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    dropped.swap(jobs_);
    thread.swap(thread_);
    cv_.notify_one();
  }
  if (thread.joinable()) thread.join();
  // Captures of jobs that never ran (device references, callbacks) are released here.
  dropped.clear();
}

void BlockingWorker::run() {
  pthread_setname_np(pthread_self(), name_.substr(0, 15).c_str());
  for (;;) {
    std::move_only_function<void()> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace devices
