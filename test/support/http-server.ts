// A real HTTP server on 127.0.0.1 for notifier tests: records every request exactly as received
// and answers from a script of responses (status, headers, body), or never answers.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface Scripted {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

export interface TestServer {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

/** Answers each request with the next scripted response (the last one repeats); 'hang' never answers. */
export async function startServer(script: (Scripted | 'hang')[] = [{ status: 200, body: '{}' }]): Promise<TestServer> {
  const received: Received[] = [];
  const server: Server = createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      received.push({ method: request.method ?? '', path: request.url ?? '', headers: request.headers, body });
      const answer = script[Math.min(received.length - 1, script.length - 1)] ?? { status: 200 };
      if (answer === 'hang') return;
      response.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
      response.end(answer.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A port on 127.0.0.1 where nothing listens: connection refused. */
/** A server for the length of `use`, closed however `use` ends. */
export async function withServer<T>(script: (Scripted | 'hang')[], use: (server: TestServer) => Promise<T>): Promise<T> {
  const server = await startServer(script);
  try {
    return await use(server);
  } finally {
    await server.close();
  }
}

export async function refusedUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}`;
}
