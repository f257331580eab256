# The benchmarks' floor: the Ceph work of each CSI call done straight on the
# Ceph libraries (python3-rados, python3-rbd) in one long-lived process, with
# one cluster connection, as a driver built on librbd would do it. Requests are
# JSON lines on stdin, answered on stdout as they finish (many in flight, each
# on a thread; the bindings release the GIL inside librados and librbd).
import json, sys, threading
from concurrent.futures import ThreadPoolExecutor
import rados, rbd

cfg = json.loads(sys.stdin.readline())
cluster = rados.Rados(name="client." + cfg["id"], conffile="/dev/null", conf={"mon_host": cfg["mon_host"], "keyfile": cfg["keyfile"], "rbd_default_clone_format": "2"})
cluster.connect(timeout=15)
out_lock = threading.Lock()
ioctxs = {}
ioctx_lock = threading.Lock()

def ioctx(pool):
    with ioctx_lock:
        if pool not in ioctxs:
            ioctxs[pool] = cluster.open_ioctx(pool)
        return ioctxs[pool]

FEATURES = {"layering": rbd.RBD_FEATURE_LAYERING, "exclusive-lock": rbd.RBD_FEATURE_EXCLUSIVE_LOCK, "object-map": rbd.RBD_FEATURE_OBJECT_MAP,
            "fast-diff": rbd.RBD_FEATURE_FAST_DIFF, "deep-flatten": rbd.RBD_FEATURE_DEEP_FLATTEN}

def features(names):
    f = 0
    for n in names:
        f |= FEATURES[n]
    return f

def step(s):
    op = s["op"]
    if op == "create":
        rbd.RBD().create(ioctx(s["pool"]), s["image"], s["size"], old_format=False, features=features(s["features"]))
    elif op == "meta_set":
        with rbd.Image(ioctx(s["pool"]), s["image"]) as img:
            img.metadata_set(s["key"], s["value"])
    elif op == "resize":
        with rbd.Image(ioctx(s["pool"]), s["image"]) as img:
            img.resize(s["size"])
    elif op == "snap_create":
        with rbd.Image(ioctx(s["pool"]), s["image"]) as img:
            img.create_snap(s["snap"])
    elif op == "snap_remove":
        with rbd.Image(ioctx(s["pool"]), s["image"]) as img:
            img.remove_snap(s["snap"])
    elif op == "clone":
        io = ioctx(s["pool"])
        rbd.RBD().clone(io, s["parent"], s["snap"], io, s["child"], features=features(s["features"]))
    elif op == "remove":
        rbd.RBD().remove(ioctx(s["pool"]), s["image"])
    elif op in ("mon", "mgr"):
        fn = cluster.mgr_command if op == "mgr" else cluster.mon_command
        rc, _, err = fn(json.dumps(s["cmd"]), b"", timeout=30)
        if rc != 0:
            raise RuntimeError("%s: %s" % (s["cmd"].get("prefix"), err))
    else:
        raise RuntimeError("unknown op " + op)

def handle(req):
    try:
        for s in req["steps"]:
            step(s)
        answer = {"id": req["id"], "ok": True}
    except Exception as e:
        answer = {"id": req["id"], "ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    with out_lock:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

# CephFS (issue 14): mon and mgr commands whose listed errnos the driver takes
# as an answer (ENOENT from a lookup), and the mgr's asynchronous clone waited
# on as the driver and its provisioner do (clone status every 250 ms).
import time
_step_rbd = step

def step(s):
    op = s["op"]
    if op in ("mon", "mgr") and "allow" in s:
        fn = cluster.mgr_command if op == "mgr" else cluster.mon_command
        rc, _, err = fn(json.dumps(s["cmd"]), b"", timeout=30)
        if rc != 0 and -rc not in s["allow"]:
            raise RuntimeError("%s: %s" % (s["cmd"].get("prefix"), err))
    elif op == "clone_wait":
        cmd = json.dumps({"prefix": "fs clone status", "vol_name": s["fs"], "clone_name": s["clone"], "group_name": s["group"], "format": "json"})
        while True:
            rc, out, err = cluster.mgr_command(cmd, b"", timeout=30)
            if rc != 0:
                raise RuntimeError("fs clone status: %s" % err)
            state = json.loads(out)["status"]["state"]
            if state == "complete":
                return
            if state in ("failed", "canceled"):
                raise RuntimeError("clone " + state)
            time.sleep(0.25)
    else:
        _step_rbd(s)

sys.stdout.write(json.dumps({"ready": True}) + "\n")
sys.stdout.flush()
pool = ThreadPoolExecutor(max_workers=32)
for line in sys.stdin:
    if line.strip():
        pool.submit(handle, json.loads(line))
pool.shutdown(wait=True)
cluster.shutdown()
