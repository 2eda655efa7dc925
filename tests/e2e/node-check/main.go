// The test pod of tests/e2e/node-check.sh: a static program with no
// dependencies beyond Go's standard library, put in an image by
// tests/e2e/oci-image.py. It tells a host process of the test's network
// namespace (REPORT_URL) what it saw, so the test sees the pod's side:
//
//   - at start, GET REPORT_URL/started?pod=POD_NAME&apiserver=ok|<error>&dns=<address>|<error>:
//     the request itself crosses the CNI bridge to a host process, apiserver
//     says whether a TCP connection to the kubernetes Service's ClusterIP
//     (KUBERNETES_SERVICE_HOST, which kube-proxy carries to the
//     kube-apiserver) succeeded, and dns what kubernetes.default.svc
//     resolves to through the pod's resolv.conf (the cluster DNS);
//   - it serves :8080: /readyz (200 once the start report went through) and /
//     (its pod name), for the readiness probe and a Service in front of it;
//   - on SIGTERM, GET REPORT_URL/sigterm?pod=POD_NAME, then exit 0.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

func report(base, event, pod string, extra url.Values) error {
	q := url.Values{"pod": {pod}}
	for k, v := range extra {
		q[k] = v
	}
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(base + "/" + event + "?" + q.Encode())
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", event, resp.Status)
	}
	return nil
}

// resolve looks name up with the pod's resolv.conf, for up to 10 s, and
// returns its first address or the last error.
func resolve(name string) string {
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		var addrs []string
		if addrs, err = net.LookupHost(name); err == nil && len(addrs) > 0 {
			return addrs[0]
		}
	}
	return fmt.Sprint(err)
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	base, pod := os.Getenv("REPORT_URL"), os.Getenv("POD_NAME")
	if base == "" || pod == "" {
		log.Fatal("REPORT_URL and POD_NAME must be set")
	}
	terms := make(chan os.Signal, 1)
	signal.Notify(terms, syscall.SIGTERM)

	var ready atomic.Bool
	http.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not reported yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, pod) })
	go func() { log.Fatal(http.ListenAndServe(":8080", nil)) }()

	apiserver := "ok"
	addr := net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	if conn, err := net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
		apiserver = err.Error()
	} else {
		conn.Close()
	}
	log.Printf("the kubernetes Service at %s: %s", addr, apiserver)
	dns := resolve("kubernetes.default.svc")
	log.Printf("kubernetes.default.svc: %s", dns)
	for {
		err := report(base, "started", pod, url.Values{"apiserver": {apiserver}, "dns": {dns}})
		if err == nil {
			break
		}
		log.Printf("reporting the start to %s: %v", base, err)
		time.Sleep(500 * time.Millisecond)
	}
	ready.Store(true)
	log.Printf("started, reported to %s", base)

	<-terms
	log.Print("SIGTERM")
	if err := report(base, "sigterm", pod, nil); err != nil {
		log.Printf("reporting the SIGTERM: %v", err)
		os.Exit(1)
	}
}
