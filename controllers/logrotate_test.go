package controllers

import (
	"reflect"
	"testing"
)

func TestExcessLogs(t *testing.T) {
	rot := []string{"0.log.20261201-100003", "0.log.20261201-100001", "0.log.20261201-100002", "0.log.20261201-100004"}
	for _, tt := range []struct {
		max  int
		want []string
	}{
		{5, nil},
		{4, []string{"0.log.20261201-100001"}},
		{2, []string{"0.log.20261201-100001", "0.log.20261201-100002", "0.log.20261201-100003"}},
		{1, []string{"0.log.20261201-100001", "0.log.20261201-100002", "0.log.20261201-100003"}}, // the newest rotated file stays
	} {
		if got := excessLogs(rot, tt.max); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("max %d: %v, want %v", tt.max, got, tt.want)
		}
	}
}
