// Command podcheck runs in a test pod of the dev node and reports, as one JSON line on
// stdout every few seconds, what the pod can reach: the API server through the kubernetes
// Service with the in-cluster configuration (service-account token and CA), the EC2 endpoint
// named by IPO_AWS_ENDPOINT_URL, its IPv4 routes, and IPO_UNSERVED_ADDRESS (a Service address
// that serves nothing, which must fail). It serves /readyz on :8080, answering 200 while the API
// server and the endpoint both answer.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

const serviceAccount = "/var/run/secrets/kubernetes.io/serviceaccount"

type report struct {
	APIServer string   `json:"apiServer"`
	Endpoint  string   `json:"endpoint"`
	Routes    []string `json:"routes"`
	Unserved  string   `json:"unservedService"`
	Ready     bool     `json:"ready"`
}

// apiServer asks the API server who the pod is (a SelfSubjectReview), with the in-cluster
// configuration: the kubernetes Service's address, the service-account token and CA.
func apiServer() (string, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	token, err := os.ReadFile(serviceAccount + "/token")
	if err != nil {
		return "", err
	}
	ca, err := os.ReadFile(serviceAccount + "/ca.crt")
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := fmt.Sprintf("https://%s/apis/authentication.k8s.io/v1/selfsubjectreviews", net.JoinHostPort(host, port))
	request, _ := http.NewRequest("POST", url, strings.NewReader(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`))
	request.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	request.Header.Set("Content-Type", "application/json")
	response, err := client.Do(request)
	if err != nil {
		return "", err
	}
	defer response.Body.Close()
	var review struct {
		Status struct {
			UserInfo struct {
				Username string `json:"username"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.NewDecoder(response.Body).Decode(&review); err != nil || response.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("%s: %s %v", url, response.Status, err)
	}
	return fmt.Sprintf("%s as %s", request.URL.Host, review.Status.UserInfo.Username), nil
}

func endpoint() (string, error) {
	url := os.Getenv("IPO_AWS_ENDPOINT_URL")
	response, err := (&http.Client{Timeout: 5 * time.Second}).Get(url + "/moto-api/data.json")
	if err != nil {
		return "", err
	}
	response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, response.Status)
	}
	return fmt.Sprintf("%s %s", url, response.Status), nil
}

// routes reads /proc/net/route: "destination/mask via gateway" for each IPv4 route.
func routes() []string {
	file, err := os.Open("/proc/net/route")
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	defer file.Close()
	var found []string
	lines := bufio.NewScanner(file)
	lines.Scan() // header
	for lines.Scan() {
		fields := strings.Fields(lines.Text())
		if len(fields) < 8 {
			continue
		}
		found = append(found, fmt.Sprintf("%s/%s via %s", address(fields[1]), address(fields[7]), address(fields[2])))
	}
	return found
}

func address(little string) string {
	raw, err := hex.DecodeString(little)
	if err != nil || len(raw) != 4 {
		return little
	}
	return net.IPv4(raw[3], raw[2], raw[1], raw[0]).String()
}

func outcome(text string, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return text
}

func main() {
	var ready atomic.Bool
	http.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
		}
	})
	go func() {
		if err := http.ListenAndServe(":8080", nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}()
	unserved := os.Getenv("IPO_UNSERVED_ADDRESS")
	for {
		api, apiErr := apiServer()
		ec2, ec2Err := endpoint()
		connection, unservedErr := net.DialTimeout("tcp", unserved, 3*time.Second)
		if unservedErr == nil {
			connection.Close()
		}
		result := report{APIServer: outcome(api, apiErr), Endpoint: outcome(ec2, ec2Err), Routes: routes(),
			Unserved: outcome("connected", unservedErr), Ready: apiErr == nil && ec2Err == nil}
		line, _ := json.Marshal(result)
		fmt.Println(string(line))
		ready.Store(result.Ready)
		time.Sleep(5 * time.Second)
	}
}
