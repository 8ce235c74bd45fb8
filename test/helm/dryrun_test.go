package helm

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Every value set's manifests pass the real apiserver's validation and admission
// (server-side apply, dry run: nothing is persisted).
func TestServerSideDryRun(t *testing.T) {
	needHelm(t)
	needEnv(t)
	ctx := context.Background()
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			r := render(t, "dry-"+vs.name, vs.values)
			for _, u := range r.unstructured {
				err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()),
					client.FieldOwner("helm-test"), client.ForceOwnership, client.DryRunAll)
				if err != nil {
					t.Errorf("server-side dry-run apply of %s %s: %v", u.GetKind(), u.GetName(), err)
				}
			}
			// nothing was created
			for _, u := range r.unstructured {
				got := &unstructured.Unstructured{}
				got.SetGroupVersionKind(u.GroupVersionKind())
				err := env.Client.Get(ctx, client.ObjectKeyFromObject(u), got)
				if !apierrors.IsNotFound(err) {
					t.Errorf("%s %s exists after a dry run (err=%v)", u.GetKind(), u.GetName(), err)
				}
			}
		})
	}
}

// A typo in a manifest is rejected by the server, so the dry run above is a real check.
func TestServerSideDryRunRejectsUnknownFields(t *testing.T) {
	needHelm(t)
	needEnv(t)
	r := render(t, "dry-typo", "")
	var ds *unstructured.Unstructured
	for _, u := range r.unstructured {
		if u.GetKind() == "DaemonSet" {
			ds = u.DeepCopy()
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet rendered")
	}
	if err := unstructured.SetNestedField(ds.Object, true, "spec", "template", "spec", "hostNetwrok"); err != nil {
		t.Fatal(err)
	}
	err := env.Client.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(ds),
		client.FieldOwner("helm-test"), client.ForceOwnership, client.DryRunAll)
	if err == nil {
		t.Fatal("the apiserver accepted spec.template.spec.hostNetwrok")
	}
	t.Logf("rejected as expected: %v", err)
}
