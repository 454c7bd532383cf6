package authv1_test

import (
	"context"
	"testing"

	"github.com/bufbuild/protocompile"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
)

// TestGeneratedCodeIsFresh compiles auth.proto in pure Go and compares it with
// the descriptor compiled into auth.pb.go, so CI needs no protoc to notice a
// .proto edited without `make proto`.
func TestGeneratedCodeIsFresh(t *testing.T) {
	c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{".."}})}
	files, err := c.Compile(context.Background(), "v1/auth.proto")
	if err != nil {
		t.Fatalf("compiling auth.proto: %v", err)
	}
	fromSource := normalize(protodesc.ToFileDescriptorProto(files[0]))
	generated := normalize(protodesc.ToFileDescriptorProto(authv1.File_auth_v1_auth_proto))
	generated.Name = fromSource.Name
	if !proto.Equal(fromSource, generated) {
		t.Fatal("api/auth/v1/auth.pb.go is stale: run make proto and commit the result")
	}
}

// normalize drops what differs between compilers but not between APIs.
func normalize(fd *descriptorpb.FileDescriptorProto) *descriptorpb.FileDescriptorProto {
	fd = proto.Clone(fd).(*descriptorpb.FileDescriptorProto)
	fd.SourceCodeInfo = nil
	var clear func(msgs []*descriptorpb.DescriptorProto)
	clear = func(msgs []*descriptorpb.DescriptorProto) {
		for _, m := range msgs {
			for _, f := range m.Field {
				f.JsonName = nil
			}
			clear(m.NestedType)
		}
	}
	clear(fd.MessageType)
	return fd
}
