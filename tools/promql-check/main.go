// Command promql-check parses the expr of every rule in Prometheus rule files with
// Prometheus' own PromQL parser and exits non-zero on the first expression that fails.
//
// A file holds either a rule file's "groups" or a PrometheusRule object's "spec.groups".
package main

import (
	"fmt"
	"os"

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

func check(path string, promql parser.Parser) (int, error) {
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
			if _, err := promql.ParseExpr(rule.Expr); err != nil {
				return checked, fmt.Errorf("%s: group %q rule %q: %w", path, group.Name, name, err)
			}
			checked++
		}
	}
	if checked == 0 {
		return 0, fmt.Errorf("%s: no rules", path)
	}
	return checked, nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: promql-check RULE_FILE...")
		os.Exit(2)
	}
	promql := parser.NewParser(parser.Options{})
	for _, path := range os.Args[1:] {
		checked, err := check(path, promql)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s: %d expressions parse\n", path, checked)
	}
}
