// The two mount(2) calls the node makes on every publish and detach, without a
// process each: a `mount` or `umount` process costs the node plugin's event
// loop a fork of itself (about 3 ms of a 100 MB process), which at 16
// concurrent detaches was half of their time. Options that need parsing stay
// with the mount command. The calls run on libuv's thread pool, so a mount
// that blocks never blocks the event loop.
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <sys/mount.h>

namespace {

class MountCall : public Napi::AsyncWorker {
 public:
  enum Kind { kUnmount, kBind };

  MountCall(Napi::Env env, Kind kind, std::string source, std::string target, int flags)
      : Napi::AsyncWorker(env), kind_(kind), source_(std::move(source)), target_(std::move(target)), flags_(flags),
        deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int r = kind_ == kUnmount ? umount2(target_.c_str(), flags_) : mount(source_.c_str(), target_.c_str(), nullptr, MS_BIND, nullptr);
    err_ = r == 0 ? 0 : errno;
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ == 0) {
      deferred_.Resolve(env.Undefined());
      return;
    }
    Napi::Error e = Napi::Error::New(env, std::string(kind_ == kUnmount ? "umount " : "bind mount on ") + target_ + ": " + std::strerror(err_));
    e.Set("errno", Napi::Number::New(env, err_));
    deferred_.Reject(e.Value());
  }

 private:
  Kind kind_;
  std::string source_, target_;
  int flags_;
  int err_ = 0;
  Napi::Promise::Deferred deferred_;
};

Napi::Value Start(const Napi::CallbackInfo& info, MountCall::Kind kind, std::string source, std::string target, int flags) {
  auto* call = new MountCall(info.Env(), kind, std::move(source), std::move(target), flags);
  Napi::Promise p = call->Promise();
  call->Queue();
  return p;
}

bool Strings(const Napi::CallbackInfo& info, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (!info[i].IsString()) {
      Napi::TypeError::New(info.Env(), "expected string arguments").ThrowAsJavaScriptException();
      return false;
    }
  }
  return true;
}

// umount(target, lazy): never follows a symlink at the target; lazy detaches at once (MNT_DETACH).
Napi::Value Unmount(const Napi::CallbackInfo& info) {
  if (!Strings(info, 1)) return info.Env().Undefined();
  int flags = UMOUNT_NOFOLLOW | (info[1].ToBoolean().Value() ? MNT_DETACH : 0);
  return Start(info, MountCall::kUnmount, "", info[0].As<Napi::String>().Utf8Value(), flags);
}

// bind(source, target): what `mount --bind source target` does (not recursive).
Napi::Value Bind(const Napi::CallbackInfo& info) {
  if (!Strings(info, 2)) return info.Env().Undefined();
  return Start(info, MountCall::kBind, info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value(), 0);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("umount", Napi::Function::New(env, Unmount));
  exports.Set("bind", Napi::Function::New(env, Bind));
  return exports;
}

}  // namespace

NODE_API_MODULE(strata_mount, Init)
