package sensor

import (
	"errors"
	"testing"
)

func TestOPCUAConfigBad(t *testing.T) {
	const nodes = "nodes: [{node: 'ns=2;s=T', metric: t}]"
	expectConfigErrors(t, []badConfig{
		{"{name: p, type: opcua}", "opcua: required"},
		{"{name: p, type: opcua, opcua: {" + nodes + "}}", "opcua.endpoint: required"},
		{"{name: p, type: opcua, opcua: {endpoint: 'http://h:4840', " + nodes + "}}", "opcua.endpoint"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', security_policy: Basic999, " + nodes + "}}", "opcua.security_policy"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', security_mode: Sign, " + nodes + "}}", "opcua.security_mode"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', security_policy: Basic256Sha256, " + nodes + "}}", "opcua.certificate_file: required"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', certificate_file: c.pem, " + nodes + "}}", "opcua.certificate_file: certificate_file and private_key_file"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', auth: username, " + nodes + "}}", "opcua.username: required"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', auth: username, username: u, " + nodes + "}}", "opcua.password_file: required"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', auth: certificate, " + nodes + "}}", "opcua.certificate_file: required"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', auth: kerberos, " + nodes + "}}", "opcua.auth"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', mode: push, " + nodes + "}}", "opcua.mode"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', sampling_interval: 1s, " + nodes + "}}", "opcua.sampling_interval: only"},
		{"{name: p, type: opcua, interval: 1s, opcua: {endpoint: 'opc.tcp://h:4840', mode: subscribe, sampling_interval: 2s, " + nodes + "}}", "opcua.sampling_interval"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', timestamp: server, " + nodes + "}}", "opcua.timestamp"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840'}}", "opcua.nodes: none"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', nodes: [{node: 'ns=x', metric: t}]}}", "opcua.nodes[0].node"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', nodes: [{node: 'ns=2;i=abc', metric: t}]}}", "opcua.nodes[0].node: \"ns=2;i=abc\": i= takes a number"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', nodes: [{node: 'i=1', metric: t}, {node: 'i=2', metric: t}]}}", "opcua.nodes[1].metric"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', nodes: [{node: 'i=1', metric: t, resolution: 0.5}]}}", "opcua.nodes[0].resolution"},
		{"{name: p, type: opcua, resolution: {t: 0.1}, opcua: {endpoint: 'opc.tcp://h:4840', " + nodes + "}}", "resolution: set the resolution of an opcua node"},
	})
}

func TestOPCUANotBuilt(t *testing.T) {
	if OPCUASupported {
		t.Skip("built with -tags opcua")
	}
	c, _ := decode(t, "{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', nodes: [{node: 'i=1', metric: t}]}}")
	if _, err := Open(c, Env{}); !errors.Is(err, ErrNoOPCUA) {
		t.Fatalf("Open without OPC UA: %v", err)
	}
}
