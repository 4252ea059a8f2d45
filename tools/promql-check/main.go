// Command promql-check parses the expr of every rule in Prometheus rule files with
// Prometheus' own PromQL parser and exits non-zero on the first expression that fails.
//
// A file holds either a rule file's "groups" or a PrometheusRule object's "spec.groups".
// With -metrics first, it also prints the metric name of every selector, one per line.
package main

import (
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

type ruleGroups struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string `yaml:"alert"`
			Record string `yaml:"record"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleFile struct {
	ruleGroups `yaml:",inline"`
	Spec       ruleGroups `yaml:"spec"`
}

// selected adds the metric name of every vector selector in expr to names.
func selected(expr parser.Expr, names map[string]bool) {
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		if selector, ok := node.(*parser.VectorSelector); ok && selector.Name != "" {
			names[selector.Name] = true
		}
		return nil
	})
}

func check(path string, promql parser.Parser, names map[string]bool) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var file ruleFile
	if err := yaml.Unmarshal(data, &file); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	checked := 0
	for _, group := range append(file.Groups, file.Spec.Groups...) {
		for _, rule := range group.Rules {
			name := rule.Alert + rule.Record
			if rule.Expr == "" {
				return checked, fmt.Errorf("%s: group %q rule %q: no expr", path, group.Name, name)
			}
			expr, err := promql.ParseExpr(rule.Expr)
			if err != nil {
				return checked, fmt.Errorf("%s: group %q rule %q: %w", path, group.Name, name, err)
			}
			selected(expr, names)
			checked++
		}
	}
	if checked == 0 {
		return 0, fmt.Errorf("%s: no rules", path)
	}
	return checked, nil
}

func main() {
	paths := os.Args[1:]
	metrics := len(paths) > 0 && paths[0] == "-metrics"
	if metrics {
		paths = paths[1:]
	}
	if len(paths) == 0 {
		fmt.Fprintln(os.Stderr, "usage: promql-check [-metrics] RULE_FILE...")
		os.Exit(2)
	}
	promql := parser.NewParser(parser.Options{})
	names := map[string]bool{}
	for _, path := range paths {
		checked, err := check(path, promql, names)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s: %d expressions parse\n", path, checked)
	}
	if metrics {
		sorted := make([]string, 0, len(names))
		for name := range names {
			sorted = append(sorted, name)
		}
		sort.Strings(sorted)
		for _, name := range sorted {
			fmt.Printf("metric %s\n", name)
		}
	}
}
