// Package netrules will hold the ServiceReconciler's backend-neutral rule model and its
// iptables, nftables and IPVS renderers (see the services issue). Nothing is here yet.
package netrules
