//go:build tools

// The main packages this module builds, so `go mod tidy` keeps their dependencies: KEDA's operator (it drives
// a ScaledObject's target through its scale subresource) and its metrics adapter (the external metrics API
// an HPA reads above one replica).
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
