/* Test client for the gai signal: prints "pid N", waits for a line on stdin, then
 * resolves each argument ("h:NAME" = gethostbyname, "h2:NAME" = gethostbyname2,
 * else getaddrinfo) and prints "NAME RESULT" per call. With -l it repeats the
 * round every 300 ms until stdin has another line or closes.
 * Built at test time with gcc (glibc) and musl-gcc (musl). */
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void resolve(const char *arg)
{
	if (strncmp(arg, "h:", 2) == 0) {
		struct hostent *h = gethostbyname(arg + 2);
		printf("%s %s\n", arg, h ? "ok" : "null");
	} else if (strncmp(arg, "h2:", 3) == 0) {
		struct hostent *h = gethostbyname2(arg + 3, AF_INET);
		printf("%s %s\n", arg, h ? "ok" : "null");
	} else {
		struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
		int rc = getaddrinfo(arg, NULL, &hints, &res);
		printf("%s %d\n", arg, rc);
		if (res)
			freeaddrinfo(res);
	}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int loop = argc > 1 && strcmp(argv[1], "-l") == 0;
	char line[64];
	printf("pid %d\n", getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	for (;;) {
		for (int i = 1 + loop; i < argc; i++)
			resolve(argv[i]);
		if (!loop)
			return 0;
		struct pollfd pfd = {.fd = 0, .events = POLLIN};
		if (poll(&pfd, 1, 300) != 0)
			return 0;
	}
}
