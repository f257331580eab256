// Package csiconn dials a CSI driver's unix socket and waits until it answers, as the real
// sidecars do: they start with the driver and must not give up while it comes up.
package csiconn

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Dial accepts a bare path or a unix:// URL, like the real sidecars' --csi-address.
func Dial(address string) (*grpc.ClientConn, error) {
	target := address
	if !strings.HasPrefix(target, "unix:") {
		target = "unix://" + target
	}
	return grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// DriverName calls GetPluginInfo until it succeeds or timeout passes.
func DriverName(conn *grpc.ClientConn, timeout time.Duration) (string, error) {
	id := csi.NewIdentityClient(conn)
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		info, err := id.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
		cancel()
		if err == nil {
			if info.GetName() == "" {
				return "", fmt.Errorf("driver returned an empty name")
			}
			return info.GetName(), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("GetPluginInfo: %w", err)
		}
		log.Printf("waiting for the driver: %v", err)
		time.Sleep(time.Second)
	}
}
