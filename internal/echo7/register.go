package echo7

import "github.com/otgw/otgw/protocols/registry"

// The one registration line: the engine and the dissector find the
// protocol's sessions and port through the registry.
var _ = registry.Register(&Spec)
