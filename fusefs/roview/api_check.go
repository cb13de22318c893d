package roview

import "github.com/hanwen/go-fuse/v2/fs"

// The operations each node type answers, checked at compile time. Every
// node also answers each mutating operation with EROFS (readOnly).
var (
	_ fs.NodeLookuper       = (*roNode)(nil)
	_ fs.NodeGetattrer      = (*roNode)(nil)
	_ fs.NodeAccesser       = (*roNode)(nil)
	_ fs.NodeOpener         = (*roNode)(nil)
	_ fs.NodeReader         = (*roNode)(nil)
	_ fs.NodeFlusher        = (*roNode)(nil)
	_ fs.NodeOpendirHandler = (*roNode)(nil)
	_ fs.NodeOnForgetter    = (*roNode)(nil)
	_ fs.NodeReadlinker     = (*roNode)(nil)
	_ fs.NodeGetxattrer     = (*roNode)(nil)
	_ fs.NodeListxattrer    = (*roNode)(nil)
	_ fs.NodeStatfser       = (*roNode)(nil)

	_ fs.FileReaddirenter = (*roDir)(nil)
	_ fs.FileSeekdirer    = (*roDir)(nil)
	_ fs.FileLookuper     = (*roDir)(nil)
	_ fs.FileReleasedirer = (*roDir)(nil)

	_ fs.NodeLookuper  = (*snapList)(nil)
	_ fs.NodeReaddirer = (*snapList)(nil)
	_ fs.NodeGetattrer = (*snapList)(nil)
	_ fs.NodeAccesser  = (*snapList)(nil)
	_ fs.NodeStatfser  = (*snapList)(nil)

	_ fs.NodeLookuper  = (*histDir)(nil)
	_ fs.NodeReaddirer = (*histDir)(nil)
	_ fs.NodeGetattrer = (*histDir)(nil)
	_ fs.NodeAccesser  = (*histDir)(nil)
	_ fs.NodeStatfser  = (*histDir)(nil)

	_ fs.NodeReadlinker = (*symNode)(nil)
	_ fs.NodeGetattrer  = (*symNode)(nil)
	_ fs.NodeAccesser   = (*symNode)(nil)

	_ fs.NodeOpener    = (*genFile)(nil)
	_ fs.NodeFlusher   = (*genFile)(nil)
	_ fs.NodeReader    = (*genFile)(nil)
	_ fs.NodeGetattrer = (*genFile)(nil)
	_ fs.NodeAccesser  = (*genFile)(nil)

	_ fs.NodeOpener    = (*catalogFile)(nil)
	_ fs.NodeFlusher   = (*catalogFile)(nil)
	_ fs.NodeReader    = (*catalogFile)(nil)
	_ fs.NodeGetattrer = (*catalogFile)(nil)
	_ fs.NodeAccesser  = (*catalogFile)(nil)

	_ fs.FilePassthroughFder = (*roFile)(nil)
	_ fs.FileReader          = (*roFile)(nil)
	_ fs.FileGetattrer       = (*roFile)(nil)
	_ fs.FileLseeker         = (*roFile)(nil)
	_ fs.FileFlusher         = (*roFile)(nil)
	_ fs.FileReleaser        = (*roFile)(nil)

	_ fs.FileReaddirenter = (*listDir)(nil)
	_ fs.FileSeekdirer    = (*listDir)(nil)
	_ fs.FileReleasedirer = (*listDir)(nil)

	_ fs.NodeLookuper       = (*remoteRoot)(nil)
	_ fs.NodeOpendirHandler = (*remoteRoot)(nil)
	_ fs.NodeGetattrer      = (*remoteRoot)(nil)
	_ fs.NodeAccesser       = (*remoteRoot)(nil)
	_ fs.NodeStatfser       = (*remoteRoot)(nil)
)

// readOnly's EROFS answers, for every node type.
var (
	_ = []interface {
		fs.NodeSetattrer
		fs.NodeCreater
		fs.NodeTmpfiler
		fs.NodeMkdirer
		fs.NodeMknoder
		fs.NodeLinker
		fs.NodeSymlinker
		fs.NodeUnlinker
		fs.NodeRmdirer
		fs.NodeRenamer
		fs.NodeSetxattrer
		fs.NodeRemovexattrer
		fs.NodeWriter
		fs.NodeAllocater
		fs.NodeCopyFileRanger
		fs.NodeFsyncer
	}{(*roNode)(nil), (*snapList)(nil), (*histDir)(nil), (*symNode)(nil), (*genFile)(nil), (*remoteRoot)(nil)}
)
