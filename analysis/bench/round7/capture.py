# A replica that prints each request head it gets (the upstream request a proxy sends) and answers 200 "ok".
# Usage: python3 capture.py PORT
import socket, sys, threading
port=int(sys.argv[1])
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,1); s.bind(("127.0.0.1",port)); s.listen(16)
def serve(c):
    buf=b""
    while True:
        d=c.recv(65536)
        if not d: return
        buf+=d
        while b"\r\n\r\n" in buf:
            head,buf=buf.split(b"\r\n\r\n",1)
            if b"/heartbeat" not in head.split(b"\r\n")[0]:
                sys.stdout.write(f"--- {len(head)+4} bytes\n"+head.decode()+"\n"); sys.stdout.flush()
            c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
while True:
    c,_=s.accept(); threading.Thread(target=serve,args=(c,),daemon=True).start()
