//go:build !opcua

package sensor

// OPCUASupported reports whether this build reads OPC UA (built with -tags
// opcua). The OPC UA stack costs the agent about 0.85 MB of binary and 1 MB
// of resident memory, so the default build leaves it out; make cross also
// builds freshet-agent-opcua.
const OPCUASupported = false

func openOPCUA(Config, Env) (Source, error) { return nil, ErrNoOPCUA }
