package binlog

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestPieceRoundTrip(t *testing.T) {
	h := pieceHeader{segmentMeta: segmentMeta{Version: layoutVersion, SegmentInfo: SegmentInfo{Name: "s", File: "binlog.000001"}}, Piece: 3, Offset: 100, Raw: 110}
	b, err := encodePiece(h, []byte("0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	got, data, err := decodePiece("p", b)
	if err != nil || got.Piece != 3 || got.Offset != 100 || got.File != "binlog.000001" || string(data) != "0123456789" {
		t.Fatalf("%+v %q %v", got, data, err)
	}
	if _, _, err := decodePiece("p", b[:5]); err == nil {
		t.Error("a truncated piece decoded")
	}
	h.Version = 99
	b, _ = encodePiece(h, nil)
	if _, _, err := decodePiece("p", b); err == nil || !strings.Contains(err.Error(), "layout version 99") {
		t.Errorf("future version: %v", err)
	}
}

// TestPutOnce: a create-only object already stored with the same bytes is
// our own PUT repeated; with other bytes it is ErrConflict (another
// streamer on the instance).
func TestPutOnce(t *testing.T) {
	repo, _ := fileRepo(t)
	s := &streamer{p: StreamParams{Repo: repo, Instance: "x"}, log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	name := pieceName("x", "seg", 0)
	if err := s.putOnce(ctx, name, []byte("a"), objOpts()); err != nil {
		t.Fatal(err)
	}
	if err := s.putOnce(ctx, name, []byte("a"), objOpts()); err != nil {
		t.Errorf("same bytes again: %v", err)
	}
	err := s.putOnce(ctx, name, []byte("b"), objOpts())
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "another streamer") {
		t.Errorf("other bytes: %v", err)
	}
}
