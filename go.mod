module github.com/otgw/otgw

go 1.26.0

require (
	github.com/cilium/ebpf v0.22.0
	github.com/fsnotify/fsnotify v1.8.0
	github.com/goburrow/modbus v0.1.0
	github.com/gopacket/gopacket v1.3.1
	github.com/gopcua/opcua v0.9.1
	github.com/simonvetter/modbus v1.6.3
	github.com/vishvananda/netlink v1.3.0
	golang.org/x/sys v0.49.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/goburrow/serial v0.1.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/vishvananda/netns v0.0.4 // indirect
	golang.org/x/net v0.48.0 // indirect
)
