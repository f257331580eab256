// Command livenessprobe stands in for kubernetes-csi/livenessprobe in the lab: GET /healthz calls
// the driver's Identity.Probe with --probe-timeout (1 s by default) and answers 500 when the call
// fails or the driver says it is not ready, 200 otherwise.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"strata.local/k8s-standins/internal/csiconn"
)

func main() {
	csiAddress := flag.String("csi-address", "/run/csi/socket", "the CSI driver's socket")
	probeTimeout := flag.Duration("probe-timeout", time.Second, "how long one Probe may take")
	healthPort := flag.Int("health-port", 9808, "port of /healthz (ignored when --http-endpoint is set)")
	httpEndpoint := flag.String("http-endpoint", "", "address of /healthz, e.g. :9808")
	flag.String("metrics-address", "", "accepted for the real sidecar's flags")
	flag.Int("v", 0, "log verbosity (accepted for the real sidecar's flags)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("livenessprobe stand-in (Strata Kubernetes lab)")
		return
	}

	conn, err := csiconn.Dial(*csiAddress)
	if err != nil {
		log.Fatalf("dial %s: %v", *csiAddress, err)
	}
	if name, err := csiconn.DriverName(conn, 0); err == nil {
		log.Printf("probing %s", name)
	} else {
		log.Printf("driver not answering yet: %v", err)
	}
	identity := csi.NewIdentityClient(conn)

	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), *probeTimeout)
		defer cancel()
		res, err := identity.Probe(ctx, &csi.ProbeRequest{})
		if err != nil {
			log.Printf("health check failed: %v", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		// An absent ready field means ready (CSI spec).
		if res.GetReady() != nil && !res.GetReady().GetValue() {
			log.Printf("health check failed: driver responded but is not ready")
			http.Error(w, "driver responded but is not ready", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	addr := *httpEndpoint
	if addr == "" {
		addr = net.JoinHostPort("", strconv.Itoa(*healthPort))
	}
	log.Printf("serving /healthz on %s", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}
