"""Each name lookup joined with the wire attempts it caused."""
