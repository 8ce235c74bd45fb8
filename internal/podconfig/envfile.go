package podconfig

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// EnvFileValue is upstream's env.ParseEnv (the EnvFiles feature's fileKeyRef): the value
// of key in an env file of KEY='value' lines (single-quoted values, which may span
// lines; blank lines and # comments skipped). "" when the key is absent, or its value is
// not quoted right after the '='.
func EnvFileValue(data []byte, key string) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	lineNum := 0
	for sc.Scan() {
		lineNum++
		line := strings.TrimLeft(sc.Text(), " \t")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		eq := strings.Index(line, "=")
		if eq == -1 {
			return "", fmt.Errorf("invalid environment variable format at line %d: missing '='", lineNum)
		}
		namePart := line[:eq]
		name := strings.TrimRight(namePart, " \t")
		if name == "" {
			return "", fmt.Errorf("invalid environment variable format at line %d: empty variable name", lineNum)
		}
		if namePart != name {
			return "", fmt.Errorf("invalid environment variable format at line %d: whitespace before '=' is not allowed", lineNum)
		}
		valuePart := line[eq+1:]
		trimmed := strings.TrimLeft(valuePart, " \t")
		if valuePart != trimmed {
			if name == key {
				return "", nil
			}
			continue
		}
		if !strings.HasPrefix(trimmed, "'") {
			return "", fmt.Errorf("invalid environment variable format at line %d: value must be enclosed in single quotes", lineNum)
		}
		var value strings.Builder
		rest := trimmed[1:]
		start := lineNum
		for {
			if closing := strings.Index(rest, "'"); closing != -1 {
				value.WriteString(rest[:closing])
				after := strings.TrimLeft(rest[closing+1:], " \t")
				if after != "" && !strings.HasPrefix(after, "#") {
					return "", fmt.Errorf("invalid environment variable format at line %d: unexpected content after closing quote", lineNum)
				}
				if name == key {
					return value.String(), nil
				}
				break
			}
			value.WriteString(rest)
			value.WriteString("\n")
			if !sc.Scan() {
				return "", fmt.Errorf("invalid environment variable format starting at line %d: unclosed single quote", start)
			}
			lineNum++
			rest = sc.Text()
		}
	}
	return "", sc.Err()
}
