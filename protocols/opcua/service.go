package opcua

import (
	"strconv"
	"strings"
)

// Service is an OPC UA service (OPC 10000-4 §5) as named in policies. A
// message body is the request or the response of one service; its type id
// says which (ServiceByTypeID). The zero value ServiceUnknown is an absent
// or unrecognised type id.
type Service uint8

// Services.
const (
	ServiceUnknown Service = iota
	ServiceFindServers
	ServiceFindServersOnNetwork
	ServiceGetEndpoints
	ServiceRegisterServer
	ServiceRegisterServer2
	ServiceOpenSecureChannel
	ServiceCloseSecureChannel
	ServiceCreateSession
	ServiceActivateSession
	ServiceCloseSession
	ServiceCancel
	ServiceAddNodes
	ServiceAddReferences
	ServiceDeleteNodes
	ServiceDeleteReferences
	ServiceBrowse
	ServiceBrowseNext
	ServiceTranslateBrowsePaths
	ServiceRegisterNodes
	ServiceUnregisterNodes
	ServiceQueryFirst
	ServiceQueryNext
	ServiceRead
	ServiceHistoryRead
	ServiceWrite
	ServiceHistoryUpdate
	ServiceCall
	ServiceCreateMonitoredItems
	ServiceModifyMonitoredItems
	ServiceSetMonitoringMode
	ServiceSetTriggering
	ServiceDeleteMonitoredItems
	ServiceCreateSubscription
	ServiceModifySubscription
	ServiceSetPublishingMode
	ServicePublish
	ServiceRepublish
	ServiceTransferSubscriptions
	ServiceDeleteSubscriptions
	ServiceFault // ServiceFault response (type id 397), answers any request
	serviceCount
)

// serviceInfo holds a service's policy name and the numeric ids of the
// DefaultBinary encodings of its request and response (0: none).
type serviceInfo struct {
	name      string
	req, resp uint32
}

var services = [serviceCount]serviceInfo{
	ServiceUnknown:               {"", 0, 0},
	ServiceFindServers:           {"find_servers", 422, 425},
	ServiceFindServersOnNetwork:  {"find_servers_on_network", 12208, 12209},
	ServiceGetEndpoints:          {"get_endpoints", 428, 431},
	ServiceRegisterServer:        {"register_server", 437, 440},
	ServiceRegisterServer2:       {"register_server2", 12211, 12212},
	ServiceOpenSecureChannel:     {"open_secure_channel", 446, 449},
	ServiceCloseSecureChannel:    {"close_secure_channel", 452, 455},
	ServiceCreateSession:         {"create_session", 461, 464},
	ServiceActivateSession:       {"activate_session", 467, 470},
	ServiceCloseSession:          {"close_session", 473, 476},
	ServiceCancel:                {"cancel", 479, 482},
	ServiceAddNodes:              {"add_nodes", 488, 491},
	ServiceAddReferences:         {"add_references", 494, 497},
	ServiceDeleteNodes:           {"delete_nodes", 500, 503},
	ServiceDeleteReferences:      {"delete_references", 506, 509},
	ServiceBrowse:                {"browse", 527, 530},
	ServiceBrowseNext:            {"browse_next", 533, 536},
	ServiceTranslateBrowsePaths:  {"translate_browse_paths", 554, 557},
	ServiceRegisterNodes:         {"register_nodes", 560, 563},
	ServiceUnregisterNodes:       {"unregister_nodes", 566, 569},
	ServiceQueryFirst:            {"query_first", 615, 618},
	ServiceQueryNext:             {"query_next", 621, 624},
	ServiceRead:                  {"read", 631, 634},
	ServiceHistoryRead:           {"history_read", 664, 667},
	ServiceWrite:                 {"write", 673, 676},
	ServiceHistoryUpdate:         {"history_update", 700, 703},
	ServiceCall:                  {"call", 712, 715},
	ServiceCreateMonitoredItems:  {"create_monitored_items", 751, 754},
	ServiceModifyMonitoredItems:  {"modify_monitored_items", 763, 766},
	ServiceSetMonitoringMode:     {"set_monitoring_mode", 769, 772},
	ServiceSetTriggering:         {"set_triggering", 775, 778},
	ServiceDeleteMonitoredItems:  {"delete_monitored_items", 781, 784},
	ServiceCreateSubscription:    {"create_subscription", 787, 790},
	ServiceModifySubscription:    {"modify_subscription", 793, 796},
	ServiceSetPublishingMode:     {"set_publishing_mode", 799, 802},
	ServicePublish:               {"publish", 826, 829},
	ServiceRepublish:             {"republish", 832, 835},
	ServiceTransferSubscriptions: {"transfer_subscriptions", 841, 844},
	ServiceDeleteSubscriptions:   {"delete_subscriptions", 847, 850},
	ServiceFault:                 {"service_fault", 0, 397},
}

// String returns the policy name ("read", "write", "browse_next"...), ""
// for ServiceUnknown.
func (s Service) String() string {
	if s < serviceCount {
		return services[s].name
	}
	return ""
}

// RequestTypeID returns the numeric binary-encoding id of the service's
// request (631 for read), 0 if it has none.
func (s Service) RequestTypeID() uint32 {
	if s < serviceCount {
		return services[s].req
	}
	return 0
}

// ResponseTypeID returns the numeric binary-encoding id of the service's
// response (634 for read).
func (s Service) ResponseTypeID() uint32 {
	if s < serviceCount {
		return services[s].resp
	}
	return 0
}

// SessionManagement reports whether s belongs to the discovery, secure
// channel and session services that any opcua rule implies (DESIGN.md).
func (s Service) SessionManagement() bool {
	switch s {
	case ServiceGetEndpoints, ServiceFindServers, ServiceFindServersOnNetwork,
		ServiceOpenSecureChannel, ServiceCloseSecureChannel,
		ServiceCreateSession, ServiceActivateSession, ServiceCloseSession:
		return true
	}
	return false
}

// ServiceByTypeID maps a body's numeric type id to its service and whether
// it is the response. It does not allocate.
func ServiceByTypeID(id uint32) (s Service, response, ok bool) {
	if id == 0 {
		return ServiceUnknown, false, false
	}
	for i := Service(1); i < serviceCount; i++ {
		switch id {
		case services[i].req:
			return i, false, true
		case services[i].resp:
			return i, true, true
		}
	}
	return ServiceUnknown, false, false
}

// ServiceByName parses a service as written in policies: the snake_case
// name ("read", "translate_browse_paths"), its CamelCase form ("Read",
// "TranslateBrowsePathsToNodeIds"), or the numeric request type id ("631").
func ServiceByName(name string) (Service, bool) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		s, resp, ok := ServiceByTypeID(uint32(n))
		if !ok || resp {
			return ServiceUnknown, false
		}
		return s, true
	}
	norm := strings.ToLower(strings.ReplaceAll(name, "_", ""))
	if norm == "translatebrowsepathstonodeids" {
		return ServiceTranslateBrowsePaths, true
	}
	for i := Service(1); i < serviceCount; i++ {
		if strings.ReplaceAll(services[i].name, "_", "") == norm {
			return i, true
		}
	}
	return ServiceUnknown, false
}
