// usb::DeviceProvider: a source of devices (enumeration) plus hotplug notification to observers.
// A provider owns its devices; a device handed to an observer stays valid until
// on_device_removed() for it has returned. Lives on one loop, like its devices.
#pragma once

#include <vector>

#include "usb/core/device.h"

namespace usb {

class DeviceProvider {
 public:
  class Observer {
   public:
    virtual ~Observer() = default;
    virtual void on_device_added(Device& device) = 0;
    // Called after the device completed its in-flight transfers with kNoDevice and just before
    // the provider destroys it.
    virtual void on_device_removed(Device& device) = 0;
  };

  virtual ~DeviceProvider() = default;
  virtual std::vector<Device*> devices() const = 0;
  void add_observer(Observer* observer) { observers_.push_back(observer); }
  void remove_observer(Observer* observer) { std::erase(observers_, observer); }

 protected:
  void notify_added(Device& device) {
    for (Observer* o : std::vector<Observer*>(observers_)) o->on_device_added(device);
  }
  void notify_removed(Device& device) {
    for (Observer* o : std::vector<Observer*>(observers_)) o->on_device_removed(device);
  }

 private:
  std::vector<Observer*> observers_;
};

}  // namespace usb
