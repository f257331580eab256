// Command node-driver-registrar stands in for kubernetes-csi/node-driver-registrar in the lab: it
// learns the driver's name from GetPluginInfo, then serves kubelet's plugin-registration API
// (pluginregistration.v1 Registration) on <plugin-registration-path>/<name>-reg.sock, telling
// kubelet the driver socket's host path. Like the real one, it exits when kubelet reports a
// failed registration, so that the pod restarts it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"strata.local/k8s-standins/internal/csiconn"
)

type registrar struct {
	registerapi.UnimplementedRegistrationServer
	name     string
	endpoint string
}

func (r *registrar) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	log.Printf("kubelet asked for plugin info: %s at %s", r.name, r.endpoint)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.name,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrar) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if !s.PluginRegistered {
		log.Printf("registration failed: %s; restarting", s.Error)
		os.Exit(1)
	}
	log.Printf("registered with kubelet")
	return &registerapi.RegistrationStatusResponse{}, nil
}

func main() {
	csiAddress := flag.String("csi-address", "/run/csi/socket", "the CSI driver's socket as this container sees it")
	endpoint := flag.String("kubelet-registration-path", "", "the CSI driver's socket as kubelet (the host) sees it")
	regDir := flag.String("plugin-registration-path", "/registration", "kubelet's plugins_registry directory as this container sees it")
	timeout := flag.Duration("timeout", time.Second, "unused: kept for the real sidecar's flags")
	connTimeout := flag.Duration("connection-timeout", 0, "give up waiting for the driver after this long (0: never)")
	httpEndpoint := flag.String("http-endpoint", "", "address of a /healthz that checks the registration socket")
	flag.Int("v", 0, "log verbosity (accepted for the real sidecar's flags)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("node-driver-registrar stand-in (Strata Kubernetes lab)")
		return
	}
	_ = timeout
	if *endpoint == "" {
		log.Fatal("--kubelet-registration-path is required")
	}

	conn, err := csiconn.Dial(*csiAddress)
	if err != nil {
		log.Fatalf("dial %s: %v", *csiAddress, err)
	}
	wait := *connTimeout
	if wait == 0 {
		wait = 100 * 365 * 24 * time.Hour
	}
	name, err := csiconn.DriverName(conn, wait)
	if err != nil {
		log.Fatal(err)
	}
	conn.Close()

	socket := filepath.Join(*regDir, name+"-reg.sock")
	if err := os.Remove(socket); err != nil && !os.IsNotExist(err) {
		log.Fatalf("remove stale %s: %v", socket, err)
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatalf("listen on %s: %v", socket, err)
	}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, &registrar{name: name, endpoint: *endpoint})

	if *httpEndpoint != "" {
		http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if _, err := os.Stat(socket); err != nil {
				http.Error(w, fmt.Sprintf("registration socket: %v", err), http.StatusInternalServerError)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		go func() { log.Fatal(http.ListenAndServe(*httpEndpoint, nil)) }()
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		srv.Stop()
		os.Remove(socket)
		os.Exit(0)
	}()
	log.Printf("serving registration for %s (endpoint %s) on %s", name, *endpoint, socket)
	if err := srv.Serve(lis); err != nil {
		log.Fatal(err)
	}
}
