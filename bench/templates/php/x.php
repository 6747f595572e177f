<?php
// Smallest example of an origin that asks for a preload.
header('Link: </x.css>; rel=preload; as=style', false);
echo "<!doctype html><link rel=stylesheet href=/x.css><p>hello</p>\n";
