// The benchmarks' CSI client, in grpc-go as Kubernetes' sidecars and kubelet
// are: the driver's figures are what its real callers see, not the cost of a
// Node.js client. Requests are JSON lines on stdin ({"id", "method":
// "/csi.v1.Controller/...", "req": the request in protojson}); each is
// answered on stdout as it finishes, many at once, with the response in
// protojson (proto field names) or the gRPC status code and message.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	_ "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

type request struct {
	ID     int             `json:"id"`
	Method string          `json:"method"`
	Req    json.RawMessage `json:"req"`
}

type answer struct {
	ID   int             `json:"id"`
	Code int             `json:"code"`
	Err  string          `json:"error,omitempty"`
	Res  json.RawMessage `json:"res,omitempty"`
}

// codeClient marks a request this client could not send (no gRPC status has this code).
const codeClient = -1

// messages finds a method's request and response types, "/csi.v1.Controller/CreateVolume".
func messages(method string) (proto.Message, proto.Message, error) {
	parts := strings.Split(strings.TrimPrefix(method, "/"), "/")
	if len(parts) != 2 {
		return nil, nil, fmt.Errorf("bad method %q", method)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(parts[0]))
	if err != nil {
		return nil, nil, err
	}
	m := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(parts[1]))
	if m == nil {
		return nil, nil, fmt.Errorf("no method %q", method)
	}
	in, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
	if err != nil {
		return nil, nil, err
	}
	out, err := protoregistry.GlobalTypes.FindMessageByName(m.Output().FullName())
	if err != nil {
		return nil, nil, err
	}
	return in.New().Interface(), out.New().Interface(), nil
}

func call(conn *grpc.ClientConn, r request) answer {
	in, out, err := messages(r.Method)
	if err == nil {
		// The benchmarks build requests for @grpc/proto-loader, which may add a oneof's name as a field.
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(r.Req, in)
	}
	if err != nil {
		return answer{ID: r.ID, Code: codeClient, Err: err.Error()}
	}
	// As the sidecars' default timeout and kubelet's deadline: long enough for any call here.
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := conn.Invoke(ctx, r.Method, in, out); err != nil {
		s := status.Convert(err)
		return answer{ID: r.ID, Code: int(s.Code()), Err: s.Message()}
	}
	res, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(out)
	if err != nil {
		return answer{ID: r.ID, Code: codeClient, Err: err.Error()}
	}
	return answer{ID: r.ID, Res: res}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: grpc-go-client unix:///path/to/csi.sock")
		os.Exit(2)
	}
	conn, err := grpc.NewClient(os.Args[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	var wg sync.WaitGroup
	for in.Scan() {
		var r request
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := call(conn, r)
			mu.Lock()
			enc.Encode(a)
			mu.Unlock()
		}()
	}
	wg.Wait()
}
