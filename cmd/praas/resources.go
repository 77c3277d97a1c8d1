package main

import (
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/praas-dev/praas/client"
)

// resourceFlags are --cpu and --memory of app and process creation, in
// Kubernetes quantities (250m, 0.5; 256Mi, 1G).
type resourceFlags struct {
	cpu, memory string
}

func (r *resourceFlags) register(cmd *cobra.Command, whom string) {
	cmd.Flags().StringVar(&r.cpu, "cpu", "", "CPU for "+whom+", e.g. 250m or 0.5 (the kubernetes backend's requests and limits; the local backend ignores it)")
	cmd.Flags().StringVar(&r.memory, "memory", "", "memory for "+whom+", e.g. 256Mi (as --cpu)")
}

// options returns the creation option the flags ask for, if any.
func (r *resourceFlags) options(cmd *cobra.Command) ([]client.CreateOption, error) {
	var res client.Resources
	if r.cpu != "" {
		q, err := resource.ParseQuantity(r.cpu)
		if err != nil || q.Sign() <= 0 {
			return nil, usagef(cmd, "--cpu %q: a positive quantity such as 250m or 0.5", r.cpu)
		}
		res.MilliCPU = q.MilliValue()
	}
	if r.memory != "" {
		q, err := resource.ParseQuantity(r.memory)
		if err != nil || q.Sign() <= 0 {
			return nil, usagef(cmd, "--memory %q: a positive quantity such as 256Mi", r.memory)
		}
		res.MemoryBytes = q.Value()
	}
	if res == (client.Resources{}) {
		return nil, nil
	}
	return []client.CreateOption{client.WithResources(res)}, nil
}
