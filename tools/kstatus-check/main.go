// Command kstatus-check computes the kstatus of one Kubernetes object, the status Flux's
// `wait: true` and `healthChecks` wait for, and prints it with its message.
//
// It reads the object as YAML or JSON from the file named by its argument, or from stdin,
// and prints one JSON line: {"status": "Current|InProgress|Failed|...", "message": "..."}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

func read(args []string) ([]byte, error) {
	switch len(args) {
	case 0:
		return io.ReadAll(os.Stdin)
	case 1:
		return os.ReadFile(args[0])
	default:
		return nil, fmt.Errorf("usage: kstatus-check [OBJECT_FILE]")
	}
}

func compute(document []byte) (*status.Result, error) {
	encoded, err := yaml.YAMLToJSON(document)
	if err != nil {
		return nil, err
	}
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(encoded); err != nil {
		return nil, err
	}
	return status.Compute(object)
}

func main() {
	document, err := read(os.Args[1:])
	if err == nil {
		var result *status.Result
		if result, err = compute(document); err == nil {
			err = json.NewEncoder(os.Stdout).Encode(map[string]string{
				"status":  result.Status.String(),
				"message": result.Message,
			})
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
