package process

import "github.com/praas-dev/praas/internal/procmetrics"

// MetricsReport is what rt would report in its next heartbeat, for tests.
func MetricsReport(rt *Runtime) *procmetrics.Report { return rt.metricsReport() }
